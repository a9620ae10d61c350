// One side of a TailBuffer (tails.py), shared by the scan's C++ kernels (put in place in a kernel's
// source by cpp_kernel.with_headers, after vector_lanes.h). Needs <algorithm> and <limits>.
// Per neuron, `keys` [W, 2C] holds sign * value of up to 2C tokens (unordered, -inf past `fill`),
// and `bound` the threshold a token must beat (in activation units). A full row is compacted to its
// best C or a few more keys at once.
struct TailSide {
  float* keys;
  int64_t* fill;
  float* bound;
  int64_t room;   // 2C
  bool upper;

  void insert(int64_t col, float value) {
    if (fill[col] >= room) compact(col);   // (the eager code leaves rows full, too)
    keys[col * room + fill[col]++] = upper ? value : -value;
  }

  // the values of x[0..n) beyond the threshold, in order, each against the threshold as it stands
  // (compactions raise it); only the lanes of a vector that beat it are looked at
  void insert_beyond(int64_t col, const float* __restrict x, int64_t n) {
    int64_t t = 0;
    for (; t + LANES <= n; t += LANES) {
      const vf v = load(x + t);
      const vf edge = vf{} + bound[col];
      for (uint32_t beyond = lane_mask(upper ? v > edge : v < edge); beyond; beyond &= beyond - 1) {
        const float value = x[t + __builtin_ctz(beyond)];
        if (upper ? value > bound[col] : value < bound[col]) insert(col, value);
      }
    }
    for (; t < n; ++t)
      if (upper ? x[t] > bound[col] : x[t] < bound[col]) insert(col, x[t]);
  }

  // Keep only the values of a full row that may still be among its best C, at least C of them, and
  // raise the threshold to the smallest kept. A pivot from a sample of the row usually keeps between
  // C and 1.5 C in one counting pass and one compacting pass (~0.3 us for 256 values, against ~2.5
  // for nth_element, which stays the way when the pivot will not settle: many equal values, NaN).
  void compact(int64_t col) {
    float* row = keys + col * room;
    const int64_t capacity = room / 2, most = capacity + capacity / 2;
    constexpr int SAMPLE = 15;
    float sample[SAMPLE];
    bool nan = false;
    for (int i = 0; i < SAMPLE; ++i) {
      sample[i] = row[(2 * i + 1) * room / (2 * SAMPLE)];
      nan |= sample[i] != sample[i];
    }
    float pivot = 0.0f;
    bool settled = false;
    if (!nan) {
      std::sort(sample, sample + SAMPLE);
      // (about 5/8 of a row of values spread like the sample's lie at or above its 6th smallest)
      for (int at = 5, tries = 0; !settled && tries < 4 && at >= 0 && at < SAMPLE; ++tries) {
        pivot = sample[at];
        int64_t kept = 0;
        for (int64_t i = 0; i < room; ++i) kept += !(row[i] < pivot);   // (a NaN is kept: it ranks highest)
        settled = kept >= capacity && kept <= most;
        at += kept < capacity ? -1 : 1;
      }
    }
    int64_t kept = capacity;
    if (settled) {
      kept = 0;
      for (int64_t i = 0; i < room; ++i) {
        const float x = row[i];
        row[kept] = x;
        kept += !(x < pivot);
      }
    } else {
      // the best `capacity` keys first (a broken model's NaN ranks highest, as topk ranks it)
      std::nth_element(row, row + capacity - 1, row + room,
                       [](float x, float y) { return x > y || (x != x && y == y); });
    }
    float lowest = std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < kept; ++i) lowest = row[i] == row[i] ? std::min(lowest, row[i]) : lowest;
    std::fill(row + kept, row + room, -std::numeric_limits<float>::infinity());
    fill[col] = kept;
    bound[col] = upper ? lowest : -lowest;
  }
};

