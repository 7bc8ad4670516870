import struct

import numpy as np
import pytest

from records.crc import crc32c, mask_crc, masked_crc32c, masked_crc32c_u64


@pytest.mark.parametrize("data, crc", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),  # the CRC-32C check value
    (b"\x00" * 32, 0x8A9136AA),  # RFC 3720 test vector
])
def test_crc32c_known_values(data, crc):
    assert crc32c(data) == crc


def test_mask_is_tensorflows_formula():
    crc = crc32c(b"123456789")
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32
    assert mask_crc(0) == 0xA282EAD8


def test_vectorized_length_crc_matches_scalar():
    lengths = np.array([0, 1, 127, 128, 418, 2**31, 2**40 + 5])
    expected = [masked_crc32c(struct.pack("<Q", int(n))) for n in lengths]
    assert masked_crc32c_u64(lengths).tolist() == expected
