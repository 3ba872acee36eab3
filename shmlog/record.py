"""The parts of Kafka's record format Python handles itself: zigzag varints and record
headers (the C core encodes and indexes everything else). Confluent's Protobuf message
indexes use the same varints."""


def zigzag_varint(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_zigzag_varint(buf, pos):
    """(value, position after it); ValueError when the varint is truncated or too long."""
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def encode_headers(items):
    """A record's headers section from (str key, bytes-or-None value) pairs."""
    parts = [zigzag_varint(len(items))]
    for key, value in items:
        parts += (zigzag_varint(len(key)), key)
        parts += (zigzag_varint(-1),) if value is None else (zigzag_varint(len(value)), value)
    return b"".join(parts)


def decode_headers(buf, pos, count):
    """`count` headers starting at buf[pos] as a list of (str key, bytes-or-None value)."""
    out = []
    for _ in range(count):
        klen, pos = read_zigzag_varint(buf, pos)
        key = bytes(buf[pos:pos + klen]).decode(errors="replace")
        pos += klen
        vlen, pos = read_zigzag_varint(buf, pos)
        out.append((key, None if vlen < 0 else bytes(buf[pos:pos + vlen])))
        pos += max(vlen, 0)
    return out
