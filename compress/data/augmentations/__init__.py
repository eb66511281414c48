"""The `augment` options beyond `none` (one module each; see compress.data.augment)."""
