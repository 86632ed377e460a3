#!/usr/bin/env python3
"""Regenerates the committed seed corpora in tests/fuzz/corpus/<target>/ (deterministic).

Seeds only need to steer libFuzzer into the interesting paths quickly: each target gets a few
random inputs of different sizes plus hand-shaped ones (isolation mode for fuzz_walk, a valid
queue program for fuzz_qi, a create-owner/domain/attach/bind prefix for fuzz_bind)."""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    rng = random.Random(20240601)
    for target in ("fuzz_qi", "fuzz_walk", "fuzz_bind", "fuzz_capi"):
        for i, n in enumerate((16, 64, 256, 1024)):
            write(target, "random-%d" % i, bytes(rng.getrandbits(8) for _ in range(n)))
    # fuzz_walk: isolation mode (odd first byte), then mostly guest writes and translations.
    write("fuzz_walk", "isolation-0", bytes([1, 0x3F, 5, 0x07, 1, 0, 0x10, 0, 0]) +
          bytes(rng.getrandbits(8) for _ in range(600)))
    write("fuzz_walk", "chaos-0", bytes([0, 0x10, 0, 0x10, 0]) + bytes(rng.getrandbits(8) for _ in range(600)))
    # fuzz_qi: decode section, empty window, then an engine program: configure, descriptor
    # pairs, tail writes, translations.
    prog = bytes(64) + bytes([0, 18, 0]) + bytes([0]) + bytes([0x11]) + struct.pack("<H", 0)
    for slot in range(4):
        prog += bytes([2, slot * 2]) + struct.pack("<QQIII", 0x6 | (3 << 4) | (1 << 16) | (1 << 32), 0x1000, 0x1234, 0x9000, 0)
        prog += bytes([3]) + struct.pack("<Q", slot * 2 + 2)
    write("fuzz_qi", "program-0", prog)
    # fuzz_bind: owner, domain, map, attach, bind, translate, repeated with variations.
    write("fuzz_bind", "sequence-0", bytes([0xFF, 1, 4]) + bytes([0, 0, 1, 5, 4, 1, 1, 0, 7, 0, 1, 9, 0, 1, 11, 0, 14, 0]) +
          bytes(rng.getrandbits(8) for _ in range(400)))
    write("fuzz_capi", "sequence-0", bytes([0] * 8) + bytes([1, 0, 0x10, 0, 0, 3, 0, 4, 1, 9, 10, 11, 12, 13, 14, 15, 16, 17]) +
          bytes(rng.getrandbits(8) for _ in range(400)))
    differential_programs()


# fuzz_differential: one short program per edit kind (opcodes in fuzz_differential.cpp). Each
# sets up a PASID, maps a guest page, translates, edits, translates again.
def differential_programs():
    T = lambda a, va, acc=1: bytes([7, a, va, acc])   # translate: a = pasid << 2 | dev
    nested = bytes([5, 0, 1, 0x04, 0])                 # dev 0 PASID 1 nested, domain 0, tree 0
    fl_map = bytes([0, 0, 1, 5, 0x07])                 # tree 0: VA page 1 -> data page 5, W/U/X
    base = nested + fl_map + T(0x04, 1) + T(0x04, 1, 2)
    write("fuzz_differential", "fl-edit", base + bytes([0, 0, 1, 9, 0x03]) + T(0x04, 1) +
          bytes([1, 0, 1, 0x10]) + T(0x04, 1) + bytes([2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + T(0x04, 1))
    # Host remaps, unmaps and write-protects the data page (GPA page 133) and the first-level
    # table pages (GPA pages 2..4), page-selective and domain-selective.
    write("fuzz_differential", "sl-edit", base + bytes([3, 0, 133, 200, 0x07]) + T(0x04, 1) +
          bytes([4, 0, 133, 0x10]) + T(0x04, 1) + bytes([3, 0, 133, 133, 0x07]) + T(0x04, 1) +
          bytes([4, 0, 3, 0x20]) + T(0x04, 1) + bytes([3, 0, 4, 4, 0x02]) + T(0x04, 1))
    write("fuzz_differential", "pasid-edit", base + bytes([5, 0, 1, 0x01, 0]) + T(0x04, 1) +
          bytes([5, 0, 1, 0x02, 0x10]) + T(0x04, 1) + bytes([5, 0, 1, 0x07, 0]) + T(0x04, 1) +
          bytes([5, 0, 1, 0x14, 0x01]) + T(0x04, 1) + bytes([5, 0, 1, 0x00, 0]) + T(0x04, 1))
    write("fuzz_differential", "context-edit", base + bytes([5, 0, 0, 0x02, 0]) + T(0x02, 1) +
          bytes([6, 0, 0x01]) + T(0x04, 1) + T(0x02, 1) + bytes([6, 0, 0x12]) + T(0x04, 1, 9) + T(0x02, 1))


if __name__ == "__main__":
    main()
