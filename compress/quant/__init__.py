"""Quantization backends: torchao int8 (PT2E, `quantize_`), N-bit grids, k-means sharing."""

import logging


class _TorchaoEnumNotice(logging.Filter):
    """torchao registers its enums with torch's pytree at import, which this torch logs as
    deprecated on every run: torchao's to change, nothing a user of ours can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_TorchaoEnumNotice())
