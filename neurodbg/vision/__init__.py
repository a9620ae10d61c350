"""Vision models: images in, feature maps, top images per channel, activation maximisation."""
