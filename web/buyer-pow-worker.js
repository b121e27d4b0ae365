// The join's proof of work, off the page's thread: finds a nonce such that
// SHA-256("<challenge>.<nonce>") starts with `bits` zero bits (API.md §11), with Web Crypto.
// In: { challenge, bits, first, step } (this worker tries nonces first, first + step, …, so
// several workers share the search). Out: { tried } now and then (nonces this worker tried
// since the last report), then { solution } (the X-Queue-Pow value).

// Digests in flight at once: one `crypto.subtle.digest` call is mostly promise overhead, so
// many are started together.
const BATCH = 512;
// A progress message at most this often.
const REPORT_MS = 100;

function leadingZeroBits(digest) {
  const bytes = new Uint8Array(digest);
  let bits = 0;
  for (const byte of bytes) {
    if (byte === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

async function solve(challenge, bits, first, step) {
  const encoder = new TextEncoder();
  let next = first;
  let tried = 0;
  let reported = Date.now();
  for (;;) {
    const nonces = [];
    const digests = [];
    for (let i = 0; i < BATCH; i++, next += step) {
      nonces.push(next);
      digests.push(crypto.subtle.digest("SHA-256", encoder.encode(`${challenge}.${next}`)));
    }
    const done = await Promise.all(digests);
    for (let i = 0; i < BATCH; i++) {
      if (leadingZeroBits(done[i]) >= bits) return `${challenge}.${nonces[i]}`;
    }
    tried += BATCH;
    const now = Date.now();
    if (now - reported >= REPORT_MS) {
      reported = now;
      postMessage({ tried });
      tried = 0;
    }
  }
}

onmessage = async (event) => {
  const { challenge, bits, first = 0, step = 1 } = event.data;
  postMessage({ solution: await solve(challenge, bits, first, step) });
};
