// The join's proof of work, off the page's thread: finds a nonce such that
// SHA-256("<challenge>.<nonce>") starts with `bits` zero bits (API.md §11).
// In: { challenge, bits, first } (`first` tells this worker's nonces from the other workers').
// Out: { tried } now and then (nonces tried since the last report), then { solution } (the
// X-Queue-Pow value), or { error } if Web Crypto disagrees with the search.
//
// Why not Web Crypto for the search: `crypto.subtle.digest` is asynchronous, and at ~1 M
// digests for 20 bits its promise overhead alone took tens of seconds (docs/BENCHMARKS.md,
// issue 27). The search instead hashes with the SHA-256 compression function below, written
// for this one message shape, and Web Crypto checks the one solution it finds: a search that
// hashed wrongly is reported as an error, never sent.
//
// The message shape: the challenge is 54 characters, so "<challenge>." is 55 bytes; the nonce
// is a 9-character head (fixed per worker) and an 8-character tail (a counter in hex). The
// first 64-byte block ("<challenge>." + head) is hashed once; each try hashes only the second
// block (the tail, the padding and the length), and only the first word of the digest is
// needed, since at most 28 bits are asked for.

// A progress message at most this often.
const REPORT_MS = 100;
// Tries between two looks at the clock.
const CHUNK = 65536;

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

const CHALLENGE_LEN = 54;
const HEAD_LEN = 9;
const TAIL_LEN = 8;
const MESSAGE_BITS = (CHALLENGE_LEN + 1 + HEAD_LEN + TAIL_LEN) * 8;

// Two ASCII hex digits of each byte value, as a 16-bit big-endian pair.
const HEX_PAIR = new Int32Array(256);
for (let b = 0; b < 256; b++) {
  const hex = b.toString(16).padStart(2, "0");
  HEX_PAIR[b] = (hex.charCodeAt(0) << 8) | hex.charCodeAt(1);
}

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

// Fills w[16..63] from w[0..15] (the message schedule).
function expand(w) {
  for (let i = 16; i < 64; i++) {
    const a = w[i - 15];
    const b = w[i - 2];
    const s0 = rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3);
    const s1 = rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10);
    w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
  }
}

// The 64 rounds over `w` from `state`: the working variables a..h at the end.
function rounds(state, w, out) {
  let a = state[0], b = state[1], c = state[2], d = state[3];
  let e = state[4], f = state[5], g = state[6], h = state[7];
  for (let i = 0; i < 64; i++) {
    const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
    const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g; g = f; f = e; e = (d + t1) | 0;
    d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  out[0] = a; out[1] = b; out[2] = c; out[3] = d;
  out[4] = e; out[5] = f; out[6] = g; out[7] = h;
}

// The state after the first block: "<challenge>." and the head, 64 bytes.
function midstate(prefix) {
  const w = new Int32Array(64);
  for (let i = 0; i < 16; i++) {
    w[i] = (prefix.charCodeAt(4 * i) << 24) | (prefix.charCodeAt(4 * i + 1) << 16) |
      (prefix.charCodeAt(4 * i + 2) << 8) | prefix.charCodeAt(4 * i + 3);
  }
  expand(w);
  const out = new Int32Array(8);
  rounds(IV, w, out);
  return IV.map((v, i) => (v + out[i]) | 0);
}

const tailOf = (n) => n.toString(16).padStart(TAIL_LEN, "0");

function leadingZeroBits(digest) {
  let bits = 0;
  for (const byte of new Uint8Array(digest)) {
    if (byte !== 0) return bits + Math.clz32(byte) - 24;
    bits += 8;
  }
  return bits;
}

// Tries tails from 0 up; the first whose digest's first word has `bits` leading zeros.
function search(state, bits) {
  const w = new Int32Array(64);
  w[2] = 0x80000000 | 0; // the padding's first bit, right after the 8-byte tail
  w[15] = MESSAGE_BITS;
  const out = new Int32Array(8);
  const shift = 32 - bits;
  let reported = Date.now();
  let tried = 0;
  for (let tail = 0; tail <= 0xffffffff; tail++) {
    w[0] = (HEX_PAIR[tail >>> 24] << 16) | HEX_PAIR[(tail >>> 16) & 255];
    w[1] = (HEX_PAIR[(tail >>> 8) & 255] << 16) | HEX_PAIR[tail & 255];
    expand(w);
    rounds(state, w, out);
    if (((state[0] + out[0]) >>> shift) === 0) return tail;
    if (++tried === CHUNK) {
      const now = Date.now();
      if (now - reported >= REPORT_MS) {
        postMessage({ tried: CHUNK });
        reported = now;
      }
      tried = 0;
    }
  }
  return null;
}

async function solve(challenge, bits, first) {
  if (challenge.length !== CHALLENGE_LEN || bits < 0 || bits > 28) {
    throw new Error("unexpected challenge");
  }
  const head = String(first).padStart(HEAD_LEN, "0");
  const tail = search(midstate(`${challenge}.${head}`), bits);
  if (tail === null) throw new Error("no nonce found");
  const solution = `${challenge}.${head}${tailOf(tail)}`;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(solution));
  if (leadingZeroBits(digest) < bits) throw new Error("the search and Web Crypto disagree");
  return solution;
}

onmessage = async (event) => {
  const { challenge, bits, first = 0 } = event.data;
  try {
    postMessage({ solution: await solve(challenge, bits, first) });
  } catch (e) {
    postMessage({ error: String(e.message || e) });
  }
};
