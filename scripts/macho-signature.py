#!/usr/bin/env python3
"""macho-signature.py BINARY: checks a 64-bit Mach-O's code signature as
macOS does when it pages the program in on Apple silicon: the CodeDirectory's
hash of every page up to its code limit matches the file. Prints one line;
exits 1 when there is no signature or a page does not match.

Layouts (all signature fields big-endian): LC_CODE_SIGNATURE (0x1d) gives the
signature's file offset and size; it is a SuperBlob (magic 0xfade0cc0) whose
index names blobs by type; type 0 is the CodeDirectory (magic 0xfade0c02).
"""

import hashlib
import struct
import sys

LC_CODE_SIGNATURE = 0x1D
SUPERBLOB = 0xFADE0CC0
CODEDIRECTORY = 0xFADE0C02
HASHES = {1: hashlib.sha1, 2: hashlib.sha256}


def fail(message):
    print(f"macho-signature: {message}")
    sys.exit(1)


def main(path):
    data = open(path, "rb").read()
    magic, _cpu, _sub, _filetype, ncmds, _size, _flags, _reserved = struct.unpack_from("<IiiIIIII", data, 0)
    if magic != 0xFEEDFACF:
        fail(f"{path} is not a little-endian 64-bit Mach-O")
    offset, signature = 32, None
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from("<II", data, offset)
        if cmd == LC_CODE_SIGNATURE:
            signature = struct.unpack_from("<II", data, offset + 8)
        offset += cmdsize
    if signature is None:
        fail("no LC_CODE_SIGNATURE: Apple silicon does not run it")
    dataoff, datasize = signature
    blob_magic, _length, count = struct.unpack_from(">III", data, dataoff)
    if blob_magic != SUPERBLOB:
        fail(f"the signature at {dataoff} is not a SuperBlob")
    directory = None
    for i in range(count):
        kind, at = struct.unpack_from(">II", data, dataoff + 12 + 8 * i)
        if kind == 0:
            directory = dataoff + at
    if directory is None or struct.unpack_from(">I", data, directory)[0] != CODEDIRECTORY:
        fail("the signature has no CodeDirectory")
    (_magic, _length, _version, flags, hash_offset, ident_offset, _special, code_slots, code_limit,
     hash_size, hash_type, _platform, page_log2) = struct.unpack_from(">IIIIIIIIIBBBB", data, directory)
    if hash_type not in HASHES:
        fail(f"unknown hash type {hash_type}")
    if code_limit != dataoff:
        fail(f"the signature covers {code_limit} bytes, the code ends at {dataoff}")
    page = 1 << page_log2
    if code_slots * page < code_limit:
        fail(f"{code_slots} page hashes of {page} bytes do not cover the {code_limit} bytes signed")
    for slot in range(code_slots):
        start = slot * page
        digest = HASHES[hash_type](data[start:min(start + page, code_limit)]).digest()[:hash_size]
        stored = data[directory + hash_offset + slot * hash_size:directory + hash_offset + (slot + 1) * hash_size]
        if digest != stored:
            fail(f"page {slot} (bytes {start}..) does not match its hash: the binary changed after signing")
    identifier = data[directory + ident_offset:data.index(b"\0", directory + ident_offset)].decode()
    kind = "ad-hoc" if flags & 0x2 else "signed"
    print(f"{kind} signature of {identifier!r}: all {code_slots} pages of {page} bytes match (hash type {hash_type})")


if __name__ == "__main__":
    main(sys.argv[1])
