"""A hook registered once and then taken out of, and put back into, its owner's hook
dictionaries: what removing and registering it again do, without a new handle each time.

The watcher hooks the model only during recorded steps. Through the public calls, arming
and disarming its five hooks every 10th step costs ~80 us on the digits MLP's ~1 ms step
(each registration builds a handle with weak references, and inside a training step every
Python operation costs several times its tight-loop cost); a slot's entries are put back
as they were, keyed by the id torch gave the hook. Registered with the public call, so
torch's own dictionaries (with_kwargs, always_called) are all found through the handle."""

from __future__ import annotations

from typing import Any

from torch.utils.hooks import RemovableHandle


class HookSlot:
    def __init__(self, handle: RemovableHandle) -> None:
        self.handle = handle
        owners = [handle.hooks_dict_ref(), *(ref() for ref in handle.extra_dict_ref)]
        self._entries: list[tuple[dict[int, Any], Any]] = [(d, d[handle.id]) for d in owners
                                                           if d is not None and handle.id in d]
        self.attached = True

    def attach(self) -> None:
        if not self.attached:
            for owner, value in self._entries:
                owner[self.handle.id] = value
            self.attached = True

    def detach(self) -> None:
        if self.attached:
            for owner, _ in self._entries:
                owner.pop(self.handle.id, None)
            self.attached = False

    def set(self, attached: bool) -> None:
        if attached != self.attached:
            self.attach() if attached else self.detach()

    def remove(self) -> None:
        """For good (the watcher closes)."""
        self.handle.remove()
        self.attached = False
