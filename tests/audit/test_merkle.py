"""The Merkle log: RFC 9162 §2.1 hashing, proofs and verifiers, and the stored log on both backends."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import pytest

from domain import Ledger
from domain.errors import InvalidInput
from domain.merkle import (
    EMPTY_ROOT,
    TreeHasher,
    consistency_path,
    event_leaf_hash,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from projections.merkle import MerkleLog, MerkleLogDamaged
from store.db import ReadStore
from store.settings import Database


def h(hex_digits: str) -> bytes:
    return bytes.fromhex(hex_digits)


# ---------------------------------------------------------------------------------------
# Reference vectors of the RFC 6962 / RFC 9162 tree, copied from
#   transparency-dev/merkle testonly/constants.go (LeafInputs, NodeHashes, RootHashes) and
#   transparency-dev/merkle proof/verify_test.go (inclusionProofs, consistencyProofs),
# the same data as google/certificate-transparency cpp/merkletree/merkle_tree_test.cc.
# ---------------------------------------------------------------------------------------

LEAF_INPUTS = [h(x) for x in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
]]
LEAVES = [leaf_hash(data) for data in LEAF_INPUTS]

# NodeHashes(): [level][index] for every complete subtree of the 8-leaf tree.
NODE_HASHES = [
    [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
     h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
     h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
     h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
     h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
     h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
     h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
     h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")],
    [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
     h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
     h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
     h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0")],
    [h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
     h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# RootHashes(): indexed by tree size, from the empty tree.
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# inclusionProofs: (leaf index, tree size, audit path). The Go file numbers leaves from 1;
# these are its entries with the index made 0-based.
INCLUSION_PROOFS = [
    (0, 1, []),
    (0, 8, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]

# consistencyProofs: (first size, second size, proof).
CONSISTENCY_PROOFS = [
    (1, 1, []),
    (1, 8, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]

# A proof served by a real Certificate Transparency log, from
# google/certificate-transparency python/ct/crypto/merkle_test.py (MerkleVerifierTest).
CT_LEAF_HASH = h("7a395c866d5ecdb0cccb623e011dbc392cd348d1d1d72776174e127a24b09c78")
CT_LEAF_INDEX = 848049
CT_TREE_SIZE = 3630887
CT_ROOT = h("78316a05c9bcf14a3a4548f5b854a9adfcd46a4c034401b3ce7eb7ac2f1d0ecb")
CT_AUDIT_PATH = [h(x) for x in [
    "1a208aeebcd1b39fe2de247ee8db9454e1e93a312d206b87f6ca9cc6ec6f1ddd",
    "0a1b78b383f580856f433c01a5741e160d451c185910027f6cc9f828687a40c4",
    "3d1745789bc63f2da15850de1c12a5bf46ed81e1cc90f086148b1662e79aab3d",
    "9095b61e14d8990acf390905621e62b1714fb8e399fbb71de5510e0aef45affe",
    "0a332b91b8fab564e6afd1dd452449e04619b18accc0ff9aa8393cd4928451f2",
    "2336f0181d264aed6d8f3a6507ca14a8d3b3c3a23791ac263e845d208c1ee330",
    "b4ce56e300590500360c146c6452edbede25d4ed83919278749ee5dbe178e048",
    "933f6ddc848ea562e4f9c5cfb5f176941301dad0c6fdb9d1fbbe34fac1be6966",
    "b95a6222958a86f74c030be27c44f57dbe313e5e7c7f4ffb98bcbd3a03bb52f2",
    "daeeb3ce5923defd0faeb8e0c210b753b85b809445d7d3d3cd537a9aabaa9c45",
    "7fadd0a13e9138a2aa6c3fdec4e2275af233b94812784f66bcca9aa8e989f2bc",
    "1864e6ba3e32878610546539734fb5eeae2529991f130c575c73a7e25a2a7c56",
    "12842d1202b1dc6828a17ab253c02e7ce9409b5192430feba44189f39cc02d66",
    "29af64b16fa3053c13d02ac63aa75b23aa468506e44c3a2315edc85d2dc22b11",
    "b527b99934a0bd9edd154e449b0502e2c499bba783f3bc3dfe23364b6b532009",
    "4584db8ae8e351ace08e01f306378a92bfd43611714814f3d834a2842d69faa8",
    "86a9a41573b0d6e4292f01e93243d6cc65b30f06606fc6fa57390e7e90ed580f",
    "a88b98fbe84d4c6aae8db9d1605dfac059d9f03fe0fcb0d5dff1295dacba09e6",
    "06326dc617a6d1f7021dc536026dbfd5fffc6f7c5531d48ef6ccd1ed1569f2a1",
    "f41fe8fdc3a2e4e8345e30216e7ebecffee26ff266eeced208a6c2a3cf08f960",
    "40cf5bde8abb76983f3e98ba97aa36240402975674e120f234b3448911090f8d",
    "b3222dc8658538079883d980d7fdc2bef9285344ea34338968f736b04aeb387a",
]]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def flipped(value: bytes, bit: int = 3) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


def forged_inclusions(
    index: int, size: int, path: list[bytes], root: bytes, leaf: bytes
) -> Iterator[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """Every way to tamper with a good inclusion proof (after proof/verify_test.go)."""
    yield "index - 1", (leaf, index - 1, size, path, root)
    yield "index + 1", (leaf, index + 1, size, path, root)
    yield "index ^ 2", (leaf, index ^ 2, size, path, root)
    yield "size * 2", (leaf, index, size * 2, path, root)
    yield "size // 2", (leaf, index, size // 2, path, root)
    yield "wrong leaf", (leaf_hash(b"WrongLeaf"), index, size, path, root)
    yield "empty root", (leaf, index, size, path, EMPTY_ROOT)
    yield "random root", (leaf, index, size, path, SOME_HASH)
    yield "trailing root", (leaf, index, size, [*path, root], root)
    yield "preceding root", (leaf, index, size, [root, *path], root)
    for i in range(len(path)):
        changed = list(path)
        changed[i] = flipped(changed[i])
        yield f"node {i} changed", (leaf, index, size, changed, root)
    if path:
        yield "truncated", (leaf, index, size, path[:-1], root)
    if len(path) > 1:
        yield "inserted node", (leaf, index, size, [path[0], SOME_HASH, *path[1:]], root)


def forged_consistencies(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> Iterator[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """Every way to tamper with a good, non-trivial consistency proof."""
    yield "first - 1", (first - 1, second, first_root, second_root, path)
    yield "first + 1", (first + 1, second, first_root, second_root, path)
    yield "first ^ 2", (first ^ 2, second, first_root, second_root, path)
    yield "second * 2", (first, second * 2, first_root, second_root, path)
    yield "second // 2", (first, second // 2, first_root, second_root, path)
    yield "wrong first root", (first, second, SOME_HASH, second_root, path)
    yield "wrong second root", (first, second, first_root, SOME_HASH, path)
    yield "swapped roots", (first, second, second_root, first_root, path)
    yield "empty proof", (first, second, first_root, second_root, [])
    yield "trailing first root", (first, second, first_root, second_root, [*path, first_root])
    yield "trailing second root", (first, second, first_root, second_root, [*path, second_root])
    yield "preceding first root", (first, second, first_root, second_root, [first_root, *path])
    yield "preceding second root", (first, second, first_root, second_root, [second_root, *path])
    yield "preceding proof[0]", (first, second, first_root, second_root, [path[0], *path])
    yield "truncated", (first, second, first_root, second_root, path[:-1])
    for i in range(len(path)):
        changed = list(path)
        changed[i] = flipped(changed[i], 4)
        yield f"node {i} changed", (first, second, first_root, second_root, changed)


def assert_inclusion_holds(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes) -> None:
    assert verify_inclusion(leaf, index, size, path, root), (index, size)
    accepted = [name for name, args in forged_inclusions(index, size, path, root, leaf)
                if verify_inclusion(*args)]
    assert accepted == [], f"forged inclusion proofs of leaf {index} in {size} accepted: {accepted}"


def assert_consistency_holds(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> None:
    assert verify_consistency(first, second, first_root, second_root, path), (first, second)
    if first == second:
        return
    accepted = [name for name, args in forged_consistencies(first, second, first_root, second_root, path)
                if verify_consistency(*args)]
    assert accepted == [], f"forged consistency proofs {first}->{second} accepted: {accepted}"


# -- Hashing and the reference tree ---------------------------------------------------


def test_leaf_and_node_hashes_carry_the_rfc_domain_prefixes() -> None:
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()


def test_an_event_leaf_is_the_leaf_hash_of_the_raw_32_bytes_of_its_hash() -> None:
    event_hash = hashlib.sha256(b"Elton John: Putin phoned me").hexdigest()
    assert event_leaf_hash(event_hash) == hashlib.sha256(b"\x00" + bytes.fromhex(event_hash)).digest()
    for bad in ["AB" * 32, "ab" * 31, "zz" * 32, None]:
        with pytest.raises(InvalidInput, match="64 lowercase hex"):
            event_leaf_hash(bad)  # type: ignore[arg-type]


def test_reference_leaf_hashes_match_the_published_vectors() -> None:
    assert [leaf_hash(data) for data in LEAF_INPUTS] == NODE_HASHES[0]


def test_reference_roots_match_the_published_vectors_for_sizes_0_to_8() -> None:
    assert [root_of(LEAVES[:n]) for n in range(9)] == ROOTS
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_every_complete_subtree_hash_matches_the_published_vectors() -> None:
    for level, hashes in enumerate(NODE_HASHES):
        for idx, expected in enumerate(hashes):
            width = 1 << level
            assert root_of(LEAVES[idx * width:(idx + 1) * width]) == expected, (level, idx)


def test_a_log_hashed_leaf_by_leaf_has_the_published_root_at_every_size() -> None:
    hasher = TreeHasher()
    assert hasher.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES, start=1):
        hasher.append(leaf)
        assert (hasher.size, hasher.root()) == (n, ROOTS[n])


def test_a_log_hashed_leaf_by_leaf_agrees_with_the_rfc_recursion_on_odd_sizes() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    hasher = TreeHasher()
    for n, leaf in enumerate(leaves, start=1):
        hasher.append(leaf)
        if n in (9, 31, 33, 100, 255, 256, 257, 300):
            assert hasher.root() == root_of(leaves[:n]), n


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_PROOFS)
def test_reference_inclusion_paths_match_the_published_proofs(index: int, size: int, path: list[bytes]) -> None:
    assert inclusion_path(LEAVES[:size], index) == path
    assert_inclusion_holds(index, size, path, ROOTS[size], LEAVES[index])


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY_PROOFS)
def test_reference_consistency_paths_match_the_published_proofs(first: int, second: int, path: list[bytes]) -> None:
    assert consistency_path(LEAVES[:second], first) == path
    assert_consistency_holds(first, second, ROOTS[first], ROOTS[second], path)


def test_a_proof_from_a_real_certificate_transparency_log_verifies() -> None:
    assert_inclusion_holds(CT_LEAF_INDEX, CT_TREE_SIZE, CT_AUDIT_PATH, CT_ROOT, CT_LEAF_HASH)


def test_every_reference_proof_of_trees_up_to_33_leaves_verifies_and_no_forgery_does() -> None:
    leaves = [leaf_hash(b"act %d" % i) for i in range(33)]
    roots = [root_of(leaves[:n]) for n in range(34)]
    for size in range(1, 34):
        for index in range(size):
            path = inclusion_path(leaves[:size], index)
            assert len(path) <= (size - 1).bit_length()
            assert_inclusion_holds(index, size, path, roots[size], leaves[index])
        for first in range(1, size + 1):
            path = consistency_path(leaves[:size], first)
            assert len(path) <= (size - 1).bit_length() + 1
            assert_consistency_holds(first, size, roots[first], roots[size], path)


def test_reference_proofs_refuse_indices_and_sizes_outside_the_tree() -> None:
    with pytest.raises(InvalidInput, match="outside a tree of 8 leaves"):
        inclusion_path(LEAVES, 8)
    with pytest.raises(InvalidInput, match="outside a tree of 0 leaves"):
        inclusion_path([], 0)
    with pytest.raises(InvalidInput, match=r"tree size in 1\.\.8"):
        consistency_path(LEAVES, 0)
    with pytest.raises(InvalidInput, match=r"tree size in 1\.\.8"):
        consistency_path(LEAVES, 9)


# -- Verifiers on malformed input --------------------------------------------------------


def test_single_leaf_tree_proves_inclusion_with_an_empty_path() -> None:
    leaf = leaf_hash(b"data")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], leaf)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (1, 1)])
def test_inclusion_in_an_impossible_position_never_verifies(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)


def test_consistency_of_equal_sizes_needs_equal_roots_and_an_empty_proof() -> None:
    assert verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[3], [EMPTY_ROOT])


def test_consistency_from_the_empty_tree_or_back_in_time_never_verifies() -> None:
    assert not verify_consistency(0, 1, EMPTY_ROOT, ROOTS[1], [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, ROOTS[1], [ROOTS[1]])
    assert not verify_consistency(5, 2, ROOTS[5], ROOTS[2], consistency_path(LEAVES[:5], 2))
    assert not verify_consistency(2, 5, ROOTS[2], ROOTS[5], [])


@pytest.mark.parametrize("path", [
    None, "5f083f0a", b"\x00" * 64, [None], [b"\x00" * 31], [ROOTS[1].hex()], [bytearray(32)], 42,
])
def test_verifiers_answer_false_and_never_raise_on_malformed_proofs(path: object) -> None:
    assert verify_inclusion(LEAVES[0], 0, 8, path, ROOTS[8]) is False  # type: ignore[arg-type]
    assert verify_consistency(6, 8, ROOTS[6], ROOTS[8], path) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, -1, True, 2.0, "6", ROOTS[8].hex(), b"short"])
def test_verifiers_answer_false_on_malformed_sizes_and_hashes(bad: object) -> None:
    good = inclusion_path(LEAVES, 5)
    assert verify_inclusion(LEAVES[5], 5, 8, good, ROOTS[8])
    arguments: list[tuple[object, ...]] = [
        (bad, 5, 8, good, ROOTS[8]), (LEAVES[5], bad, 8, good, ROOTS[8]),
        (LEAVES[5], 5, bad, good, ROOTS[8]), (LEAVES[5], 5, 8, good, bad),
    ]
    for args in arguments:
        assert verify_inclusion(*args) is False, args  # type: ignore[arg-type]
    proof = consistency_path(LEAVES, 6)
    for args in [(bad, 8, ROOTS[6], ROOTS[8], proof), (6, bad, ROOTS[6], ROOTS[8], proof),
                 (6, 8, bad, ROOTS[8], proof), (6, 8, ROOTS[6], bad, proof)]:
        assert verify_consistency(*args) is False, args  # type: ignore[arg-type]


# -- The stored log, on SQLite and PostgreSQL ---------------------------------------------


def story_event_hashes(count: int) -> list[str]:
    """Stand-ins for the hashes of the acts in the Putin/Elton John story, one per event."""
    return [hashlib.sha256(b"putin-phoned-elton-john act %d" % i).hexdigest() for i in range(count)]


def positions_of(count: int) -> list[int]:
    # Log positions need not be contiguous (PostgreSQL may skip a number); leaves are.
    return [7 + 3 * i for i in range(count)]


@pytest.fixture
def store(database_url: str) -> Iterator[ReadStore]:
    read_store = ReadStore(Database.from_url(database_url))
    yield read_store
    read_store.close()


def appended(store: ReadStore, log: MerkleLog, hashes: Sequence[str], batches: Sequence[int]) -> list[bytes]:
    """Append the hashes in batches of the given sizes, one transaction each; the leaf hashes."""
    items = list(zip(positions_of(len(hashes)), hashes, strict=True))
    with store.transaction() as cur:
        log.create_tables(cur)
    start = 0
    for batch in batches:
        with store.transaction() as cur:
            log.append(cur, items[start:start + batch])
        start += batch
    assert start == len(items)
    return [event_leaf_hash(x) for x in hashes]


UNEVEN_BATCHES = [1, 2, 5, 13, 3, 30, 1, 15]  # 70 leaves


def test_stored_roots_and_proofs_equal_the_reference_for_every_size_up_to_70(store: ReadStore) -> None:
    log = MerkleLog()
    leaves = appended(store, log, story_event_hashes(70), UNEVEN_BATCHES)
    roots = [root_of(leaves[:n]) for n in range(71)]
    with store.reading() as cur:
        assert log.size(cur) == 70
        for size in range(0, 71):
            assert log.root(cur, size) == roots[size], size
        for size in range(1, 71):
            for index in range(size):
                path = log.inclusion(cur, index, size)
                assert path == inclusion_path(leaves[:size], index), (index, size)
                assert verify_inclusion(leaves[index], index, size, path, roots[size])
            for first in range(1, size + 1):
                proof = log.consistency(cur, first, size)
                assert proof == consistency_path(leaves[:size], first), (first, size)
                assert verify_consistency(first, size, roots[first], roots[size], proof)


def test_forged_proofs_from_the_stored_log_are_rejected(store: ReadStore) -> None:
    log = MerkleLog()
    leaves = appended(store, log, story_event_hashes(70), UNEVEN_BATCHES)
    with store.reading() as cur:
        for size in (2, 3, 8, 13, 33, 64, 70):
            root = log.root(cur, size)
            for index in sorted({0, 1, size // 2, size - 2, size - 1}):
                assert_inclusion_holds(index, size, log.inclusion(cur, index, size), root, leaves[index])
            for first in sorted({1, 2, size // 3 or 1, size - 1}):
                if first < size:
                    assert_consistency_holds(
                        first, size, log.root(cur, first), root, log.consistency(cur, first, size)
                    )


def test_the_log_stores_every_complete_subtree_as_it_completes(store: ReadStore) -> None:
    log = MerkleLog()
    leaves = appended(store, log, story_event_hashes(70), UNEVEN_BATCHES)
    with store.reading() as cur:
        rows = cur.execute("SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx").fetchall()
        stored = {(int(level), int(idx)): bytes(value) for level, idx, value in rows}
        leaf_rows = cur.execute("SELECT leaf_index, position, hash FROM merkle_leaves ORDER BY leaf_index").fetchall()
    expected = {
        (level, idx): root_of(leaves[idx << level:(idx + 1) << level])
        for level in range(1, 7) for idx in range(70 >> level)
    }
    assert stored == expected
    assert [(int(i), int(p), bytes(x)) for i, p, x in leaf_rows] == list(
        zip(range(70), positions_of(70), leaves, strict=True)
    )


def test_several_appends_in_one_transaction_continue_the_same_tree(store: ReadStore) -> None:
    log = MerkleLog()
    hashes = story_event_hashes(41)
    items = list(zip(positions_of(41), hashes, strict=True))
    with store.transaction() as cur:
        log.create_tables(cur)
        for start, stop in [(0, 3), (3, 4), (4, 20), (20, 41)]:
            log.append(cur, items[start:stop])
        assert log.root(cur, 41) == root_of([event_leaf_hash(x) for x in hashes])


def test_thousands_of_leaves_append_in_one_call(store: ReadStore) -> None:
    log = MerkleLog()
    leaves = appended(store, log, story_event_hashes(5000), [1, 300, 4699])
    with store.reading() as cur:
        assert log.size(cur) == 5000
        assert log.root(cur, 5000) == root_of(leaves)
        assert log.root(cur, 4097) == root_of(leaves[:4097])
        path = log.inclusion(cur, 4321, 5000)
        assert verify_inclusion(leaves[4321], 4321, 5000, path, root_of(leaves))
        proof = log.consistency(cur, 1234, 5000)
        assert verify_consistency(1234, 5000, root_of(leaves[:1234]), root_of(leaves), proof)


def test_an_empty_log_has_the_empty_root_and_no_proofs(store: ReadStore) -> None:
    log = MerkleLog()
    with store.transaction() as cur:
        log.create_tables(cur)
        log.append(cur, [])
        assert log.size(cur) == 0
        assert log.root(cur, 0) == EMPTY_ROOT
        with pytest.raises(InvalidInput, match="beyond the log, which holds 0 leaves"):
            log.inclusion(cur, 0, 1)


def test_a_leaf_is_found_by_its_log_position(store: ReadStore) -> None:
    log = MerkleLog()
    appended(store, log, story_event_hashes(10), [4, 6])
    with store.reading() as cur:
        assert [log.leaf_index_of(cur, p) for p in positions_of(10)] == list(range(10))
        assert log.leaf_index_of(cur, 8) is None
        assert log.leaf_index_of(cur, 10_000) is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda log, cur: log.root(cur, 11), "tree_size 11 is beyond the log, which holds 10 leaves"),
    (lambda log, cur: log.root(cur, -1), "at least 0"),
    (lambda log, cur: log.inclusion(cur, 0, 0), "at least 1"),
    (lambda log, cur: log.inclusion(cur, 5, 5), r"leaf_index must be in 0\.\.4"),
    (lambda log, cur: log.inclusion(cur, -1, 5), r"leaf_index must be in 0\.\.4"),
    (lambda log, cur: log.inclusion(cur, 0, 11), "beyond the log"),
    (lambda log, cur: log.consistency(cur, 0, 5), r"first_size must be in 1\.\.5"),
    (lambda log, cur: log.consistency(cur, 6, 5), r"first_size must be in 1\.\.5"),
    (lambda log, cur: log.consistency(cur, 3, 11), "second_size 11 is beyond the log"),
    (lambda log, cur: log.consistency(cur, 1, True), "at least 1"),
])
def test_sizes_and_indices_outside_the_log_are_refused_with_a_clear_error(
    store: ReadStore, call: object, message: str
) -> None:
    log = MerkleLog()
    appended(store, log, story_event_hashes(10), [10])
    with store.reading() as cur, pytest.raises(InvalidInput, match=message):
        call(log, cur)  # type: ignore[operator]


def test_append_refuses_out_of_order_positions_and_bad_hashes_and_writes_nothing(store: ReadStore) -> None:
    log = MerkleLog()
    appended(store, log, story_event_hashes(5), [5])
    last = positions_of(5)[-1]
    good = story_event_hashes(6)[5]
    for items, message in [
        ([(last, good)], "positions must increase"),
        ([(last + 5, good), (last + 4, good)], "positions must increase"),
        ([(last + 1, good), (last + 2, "not a hash")], "64 lowercase hex"),
    ]:
        with store.transaction() as cur, pytest.raises(InvalidInput, match=message):
            log.append(cur, items)
        with store.reading() as cur:
            assert log.size(cur) == 5


def test_logs_with_different_prefixes_are_independent(store: ReadStore) -> None:
    live, rebuilt = MerkleLog("rm_"), MerkleLog("rb_")
    live_leaves = appended(store, live, story_event_hashes(9), [9])
    rebuilt_leaves = appended(store, rebuilt, story_event_hashes(4), [2, 2])
    with store.reading() as cur:
        assert live.root(cur, 9) == root_of(live_leaves)
        assert rebuilt.size(cur) == 4
        assert rebuilt.root(cur, 4) == root_of(rebuilt_leaves)


def test_a_table_prefix_must_be_a_plain_identifier() -> None:
    with pytest.raises(InvalidInput, match="table prefix"):
        MerkleLog("x; DROP TABLE events; --")


def test_a_missing_stored_subtree_is_reported_as_damage(store: ReadStore) -> None:
    log = MerkleLog()
    appended(store, log, story_event_hashes(12), [12])
    with store.transaction() as cur:
        cur.execute("DELETE FROM merkle_nodes WHERE level = 3 AND idx = 0")
    with store.reading() as cur, pytest.raises(MerkleLogDamaged, match=r"\(3, 0\)"):
        log.root(cur, 12)


def test_the_log_of_a_real_ledger_feed_has_the_root_of_its_event_hashes(
    ledger: Ledger, database_url: str
) -> None:
    elton = {"id": "elton-john", "name": "Elton John"}
    ledger.register_claim("Vladimir Putin telephoned Elton John on 14 September 2015",
                          key="putin-phoned-elton-john", subjects=["Vladimir Putin", "Elton John"])
    ledger.assert_claim("putin-phoned-elton-john", party=elton, act_id="instagram-post",
                        said_at="2015-09-14", source={"outlet": "Instagram"})
    ledger.deny_claim("putin-phoned-elton-john", act_id="peskov-denial",
                      party={"id": "dmitry-peskov", "name": "Dmitry Peskov"},
                      on_behalf_of={"id": "vladimir-putin", "name": "Vladimir Putin"},
                      said_at="2015-09-15", source={"outlet": "TASS"})
    feed = [(event.position, event.hash) for event in ledger.read_log(0, 10)]
    store = ReadStore(Database.from_url(database_url))
    try:
        log = MerkleLog()
        with store.transaction() as cur:
            log.create_tables(cur)
            log.append(cur, feed)
        with store.reading() as cur:
            assert log.root(cur, 3) == root_of([leaf_hash(bytes.fromhex(x)) for _, x in feed])
            assert log.leaf_index_of(cur, feed[2][0]) == 2
    finally:
        store.close()
