import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EMPTY_ROOT,
  MerkleFrontier,
  MerkleTree,
  leafHash,
  merkleRoot,
  nodeHash,
  rootFromInclusionProof,
  splitPoint,
  verifyConsistency,
  verifyInclusion,
} from '../../src/receipt/merkle.js';

interface Vectors {
  leaves: string[];
  emptyRoot: string;
  roots: string[];
  inclusion: Array<{ leafIndex: number; treeSize: number; path: string[] }>;
  consistency: Array<{ size1: number; size2: number; proof: string[] }>;
}

const V = JSON.parse(readFileSync(path.join(import.meta.dirname, 'vectors', 'rfc6962.json'), 'utf8')) as Vectors;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Buffer => Buffer.from(s, 'hex');
const LEAVES = V.leaves.map(unhex);
const LEAF_HASHES = LEAVES.map((d) => leafHash(d));
const FULL = MerkleTree.fromLeafHashes(LEAF_HASHES);
const rootOf = (size: number): Buffer => unhex(V.roots[size - 1]!);
const SOME_HASH = unhex('abacaba000000000000000000000000000000000000000000060061e00123456');

/** The RFC 6962 §2.1 definition, literally (recursive), as the oracle for everything else. */
function referenceMth(leaves: readonly Uint8Array[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  if (leaves.length === 1) return createHash('sha256').update(Buffer.from([0])).update(leaves[0]!).digest();
  const k = splitPoint(leaves.length);
  return createHash('sha256')
    .update(Buffer.from([1]))
    .update(referenceMth(leaves.slice(0, k)))
    .update(referenceMth(leaves.slice(k)))
    .digest();
}

function flipBit(b: Uint8Array, byte: number, mask: number): Buffer {
  const copy = Buffer.from(b);
  copy[byte] = (copy[byte] ?? 0) ^ mask;
  return copy;
}

/** Every way of damaging a good inclusion proof (after transparency-dev's corruptInclusionProof). */
function corruptedInclusions(index: number, size: number, proof: Buffer[], root: Buffer, leaf: Buffer) {
  const probes: Array<{ desc: string; index: number; size: number; proof: Buffer[]; root: Buffer; leaf: Buffer }> = [
    { desc: 'index - 1', index: index - 1, size, proof, root, leaf },
    { desc: 'index + 1', index: index + 1, size, proof, root, leaf },
    { desc: 'index ^ 2', index: index ^ 2, size, proof, root, leaf },
    { desc: 'size * 2', index, size: size * 2, proof, root, leaf },
    { desc: 'size / 2', index, size: Math.floor(size / 2), proof, root, leaf },
    { desc: 'wrong leaf', index, size, proof, root, leaf: leafHash('WrongLeaf') },
    { desc: 'empty root', index, size, proof, root: EMPTY_ROOT, leaf },
    { desc: 'random root', index, size, proof, root: SOME_HASH, leaf },
    { desc: 'trailing garbage', index, size, proof: [...proof, Buffer.alloc(0)], root, leaf },
    { desc: 'trailing root', index, size, proof: [...proof, root], root, leaf },
    { desc: 'preceding garbage', index, size, proof: [Buffer.alloc(0), ...proof], root, leaf },
    { desc: 'preceding root', index, size, proof: [root, ...proof], root, leaf },
  ];
  proof.forEach((_, i) => {
    const wrong = proof.map((p, j) => (j === i ? flipBit(p, 0, 8) : p));
    probes.push({ desc: `proof[${i}] bit 3 flipped`, index, size, proof: wrong, root, leaf });
  });
  if (proof.length > 0) probes.push({ desc: 'removed component', index, size, proof: proof.slice(0, -1), root, leaf });
  if (proof.length > 1) {
    probes.push({ desc: 'inserted component', index, size, proof: [proof[0]!, SOME_HASH, ...proof.slice(1)], root, leaf });
  }
  return probes;
}

function corruptedConsistencies(size1: number, size2: number, root1: Buffer, root2: Buffer, proof: Buffer[]) {
  const wrongRoot = createHash('sha256').update('WrongRoot').digest();
  const probes: Array<{ desc: string; size1: number; size2: number; root1: Buffer; root2: Buffer; proof: Buffer[] }> = [
    { desc: 'size1 - 1', size1: size1 - 1, size2, root1, root2, proof },
    { desc: 'size1 + 1', size1: size1 + 1, size2, root1, root2, proof },
    { desc: 'size1 ^ 2', size1: size1 ^ 2, size2, root1, root2, proof },
    { desc: 'size2 * 2', size1, size2: size2 * 2, root1, root2, proof },
    { desc: 'size2 / 2', size1, size2: Math.floor(size2 / 2), root1, root2, proof },
    { desc: 'wrong root1', size1, size2, root1: wrongRoot, root2, proof },
    { desc: 'wrong root2', size1, size2, root1, root2: wrongRoot, proof },
    { desc: 'swapped roots', size1, size2, root1: root2, root2: root1, proof },
    { desc: 'empty proof', size1, size2, root1, root2, proof: [] },
    { desc: 'trailing garbage', size1, size2, root1, root2, proof: [...proof, Buffer.alloc(0)] },
    { desc: 'trailing root1', size1, size2, root1, root2, proof: [...proof, root1] },
    { desc: 'trailing root2', size1, size2, root1, root2, proof: [...proof, root2] },
    { desc: 'preceding garbage', size1, size2, root1, root2, proof: [Buffer.alloc(0), ...proof] },
    { desc: 'preceding root1', size1, size2, root1, root2, proof: [root1, ...proof] },
    { desc: 'preceding root2', size1, size2, root1, root2, proof: [root2, ...proof] },
    { desc: 'preceding proof[0]', size1, size2, root1, root2, proof: [proof[0]!, ...proof] },
    { desc: 'truncated proof', size1, size2, root1, root2, proof: proof.slice(0, -1) },
  ];
  proof.forEach((_, i) => {
    const wrong = proof.map((p, j) => (j === i ? flipBit(p, 0, 16) : p));
    probes.push({ desc: `proof[${i}] bit 4 flipped`, size1, size2, root1, root2, proof: wrong });
  });
  return probes;
}

describe('RFC 6962 hashing', () => {
  it('hashes leaves with 0x00 and nodes with 0x01 (domain separation)', () => {
    expect(hex(leafHash(Buffer.alloc(0)))).toBe('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
    expect(hex(leafHash('abc'))).toBe(hex(createHash('sha256').update(Buffer.from([0, 0x61, 0x62, 0x63])).digest()));
    const l = LEAF_HASHES[0]!;
    const r = LEAF_HASHES[1]!;
    expect(hex(nodeHash(l, r))).toBe(hex(createHash('sha256').update(Buffer.concat([Buffer.from([1]), l, r])).digest()));
    expect(hex(nodeHash(l, r))).toBe(V.roots[1]);
  });

  it('splits at the largest power of two below n', () => {
    expect([2, 3, 4, 5, 8, 9, 2 ** 40 + 1].map(splitPoint)).toEqual([1, 2, 2, 4, 4, 8, 2 ** 40]);
    expect(() => splitPoint(1)).toThrow(TypeError);
  });

  it('computes the published roots for sizes 0..8 (tree, frontier, list and the recursive definition)', () => {
    expect(hex(merkleRoot([]))).toBe(V.emptyRoot);
    expect(hex(new MerkleTree().root())).toBe(V.emptyRoot);
    expect(hex(new MerkleFrontier().root())).toBe(V.emptyRoot);
    const frontier = new MerkleFrontier();
    for (let n = 1; n <= 8; n++) {
      frontier.append(LEAF_HASHES[n - 1]!);
      expect(hex(FULL.root(n)), `size ${n}`).toBe(V.roots[n - 1]);
      expect(hex(frontier.root()), `frontier size ${n}`).toBe(V.roots[n - 1]);
      expect(hex(merkleRoot(LEAF_HASHES.slice(0, n)))).toBe(V.roots[n - 1]);
      expect(hex(referenceMth(LEAVES.slice(0, n)))).toBe(V.roots[n - 1]);
    }
  });
});

describe('inclusion proofs (RFC 6962 §2.1.1)', () => {
  it.each(V.inclusion)('leaf $leafIndex of $treeSize: generates the published audit path and verifies it', (v) => {
    const expected = v.path.map(unhex);
    const proof = FULL.inclusionProof(v.leafIndex, v.treeSize);
    expect(proof.map(hex)).toEqual(v.path);
    const leaf = LEAF_HASHES[v.leafIndex]!;
    const root = rootOf(v.treeSize);
    expect(hex(rootFromInclusionProof(leaf, v.leafIndex, v.treeSize, expected)!)).toBe(hex(root));
    expect(verifyInclusion(leaf, v.leafIndex, v.treeSize, expected, root)).toBe(true);
    for (const p of corruptedInclusions(v.leafIndex, v.treeSize, expected, root, leaf)) {
      expect(verifyInclusion(p.leaf, p.index, p.size, p.proof, p.root), p.desc).toBe(false);
    }
  });

  it('rejects impossible index/size pairs and bad hash sizes', () => {
    const h = LEAF_HASHES[0]!;
    for (const [index, size] of [[0, 0], [1, 0], [2, 1], [1, 1], [-1, 2], [0.5, 2]] as const) {
      expect(rootFromInclusionProof(h, index, size, [])).toBeNull();
    }
    expect(verifyInclusion(h, 0, 1, [], h)).toBe(true);
    expect(verifyInclusion(Buffer.alloc(0), 0, 1, [], h)).toBe(false);
    expect(verifyInclusion(h, 0, 1, [], Buffer.alloc(0))).toBe(false);
    expect(() => FULL.inclusionProof(8, 8)).toThrow('leaf index 8 is not in a tree of 8 leaves');
    expect(() => FULL.inclusionProof(0, 9)).toThrow('the tree has 8 leaves, not 9');
  });
});

describe('consistency proofs (RFC 6962 §2.1.2)', () => {
  it.each(V.consistency)('$size1 → $size2: generates the published proof and verifies it', (v) => {
    const expected = v.proof.map(unhex);
    expect(FULL.consistencyProof(v.size1, v.size2).map(hex)).toEqual(v.proof);
    const root1 = rootOf(v.size1);
    const root2 = rootOf(v.size2);
    expect(verifyConsistency(v.size1, v.size2, root1, root2, expected)).toBe(true);
    if (expected.length === 0) return;
    for (const p of corruptedConsistencies(v.size1, v.size2, root1, root2, expected)) {
      expect(verifyConsistency(p.size1, p.size2, p.root1, p.root2, p.proof), p.desc).toBe(false);
    }
  });

  it('handles the trivial cases as RFC 9162 §2.1.4.2 and transparency-dev do', () => {
    const r1 = rootOf(1);
    const r2 = rootOf(2);
    expect(verifyConsistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])).toBe(true);
    expect(verifyConsistency(0, 1, EMPTY_ROOT, r1, [])).toBe(true);
    expect(verifyConsistency(1, 1, r1, r1, [])).toBe(true);
    expect(verifyConsistency(1, 1, r1, r2, [])).toBe(false); // same size, different roots
    expect(verifyConsistency(1, 1, r1, r1, [EMPTY_ROOT])).toBe(false); // roots match but the proof is not empty
    expect(verifyConsistency(0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT])).toBe(false);
    expect(verifyConsistency(2, 1, r2, r1, [])).toBe(false); // time travel
    expect(verifyConsistency(1, 2, r1, r2, [])).toBe(false); // empty proof
    expect(FULL.consistencyProof(0, 8)).toEqual([]);
    expect(FULL.consistencyProof(8, 8)).toEqual([]);
    expect(() => FULL.consistencyProof(5, 4)).toThrow('fromSize 5 is larger than toSize 4');
  });
});

describe('MerkleFrontier', () => {
  it('holds one subtree root per set bit of its size and round-trips through (size, hashes)', () => {
    const f = new MerkleFrontier();
    for (const h of LEAF_HASHES.slice(0, 7)) f.append(h);
    expect(f.size).toBe(7);
    expect(f.subtrees().map(({ start, end }) => [start, end])).toEqual([[0, 4], [4, 6], [6, 7]]);
    expect(hex(f.hashes[0]!)).toBe(V.roots[3]);
    const copy = new MerkleFrontier(7, f.hashes);
    copy.append(LEAF_HASHES[7]!);
    expect(hex(copy.root())).toBe(V.roots[7]);
    expect(f.size).toBe(7);
    expect(() => new MerkleFrontier(7, f.hashes.slice(1))).toThrow('a frontier of 7 leaves has 3 hash(es), got 2');
    expect(() => new MerkleFrontier(1, [Buffer.alloc(31)])).toThrow('frontier hash 0 must be 32 bytes, got 31');
  });
});

const leafData = fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 140 });

describe('properties', () => {
  it('tree, frontier and the recursive definition agree on every root', () => {
    fc.assert(
      fc.property(leafData, (leaves) => {
        const hashes = leaves.map((d) => leafHash(d));
        const tree = MerkleTree.fromLeafHashes(hashes);
        const frontier = new MerkleFrontier();
        for (let n = 1; n <= leaves.length; n++) {
          frontier.append(hashes[n - 1]!);
          const expected = referenceMth(leaves.slice(0, n));
          expect(tree.root(n).equals(expected)).toBe(true);
          expect(frontier.root().equals(expected)).toBe(true);
          expect(tree.frontier(n).root().equals(expected)).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('every inclusion proof verifies, for every older size too; an altered leaf or proof element fails', () => {
    fc.assert(
      fc.property(leafData, fc.nat(), fc.nat(), (leaves, a, b) => {
        const hashes = leaves.map((d) => leafHash(d));
        const tree = MerkleTree.fromLeafHashes(hashes);
        const size = 1 + (a % leaves.length);
        const root = tree.root(size);
        for (let i = 0; i < size; i++) {
          const proof = tree.inclusionProof(i, size);
          expect(verifyInclusion(hashes[i]!, i, size, proof, root)).toBe(true);
        }
        const i = b % size;
        const proof = tree.inclusionProof(i, size);
        expect(verifyInclusion(leafHash(Buffer.concat([leaves[i]!, Buffer.from([1])])), i, size, proof, root)).toBe(false);
        proof.forEach((_, j) => {
          const altered = proof.map((p, k) => (k === j ? flipBit(p, b % 32, 1 << (a % 8)) : p));
          expect(verifyInclusion(hashes[i]!, i, size, altered, root)).toBe(false);
        });
      }),
      { numRuns: 60 },
    );
  });

  it('consistency between any two sizes verifies; an altered proof element or root fails', () => {
    fc.assert(
      fc.property(leafData, fc.nat(), fc.nat(), (leaves, a, b) => {
        const hashes = leaves.map((d) => leafHash(d));
        const tree = MerkleTree.fromLeafHashes(hashes);
        const size2 = 1 + (a % leaves.length);
        const size1 = b % (size2 + 1);
        const proof = tree.consistencyProof(size1, size2);
        expect(verifyConsistency(size1, size2, tree.root(size1), tree.root(size2), proof)).toBe(true);
        if (size1 === 0 || size1 === size2) return;
        proof.forEach((_, j) => {
          const altered = proof.map((p, k) => (k === j ? flipBit(p, a % 32, 1 << (b % 8)) : p));
          expect(verifyConsistency(size1, size2, tree.root(size1), tree.root(size2), altered)).toBe(false);
        });
        expect(verifyConsistency(size1, size2, flipBit(tree.root(size1), 0, 1), tree.root(size2), proof)).toBe(false);
        expect(verifyConsistency(size1, size2, tree.root(size1), flipBit(tree.root(size2), 31, 128), proof)).toBe(false);
      }),
      { numRuns: 60 },
    );
  });

  it('a tree started from a frontier (pruned prefix) gives the same roots and proofs for the retained leaves', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 8 }), { minLength: 2, maxLength: 120 }), fc.nat(), (leaves, a) => {
        const hashes = leaves.map((d) => leafHash(d));
        const full = MerkleTree.fromLeafHashes(hashes);
        const base = a % leaves.length;
        const pruned = new MerkleTree(full.frontier(base));
        for (const h of hashes.slice(base)) pruned.append(h);
        expect(pruned.base).toBe(base);
        for (let size = base + 1; size <= leaves.length; size++) {
          expect(pruned.root(size).equals(full.root(size))).toBe(true);
          for (let i = base; i < size; i++) {
            expect(pruned.inclusionProof(i, size)).toEqual(full.inclusionProof(i, size));
          }
          for (let from = base + 1; from <= size; from++) {
            expect(pruned.consistencyProof(from, size)).toEqual(full.consistencyProof(from, size));
          }
        }
        if (base > 0) expect(() => pruned.inclusionProof(base - 1)).toThrow(`leaf ${base - 1} was pruned`);
      }),
      { numRuns: 40 },
    );
  });
});
