//! Helpers for the garbage/mutation loops of the parser tests: a small deterministic PRNG,
//! random bytes biased towards a format's own special characters, and mutations of a valid
//! input (flip, insert, delete, duplicate a slice).

/// xorshift64*; deterministic so that a failure can be replayed.
pub fn next(seed: &mut u64) -> u64 {
    let mut x = *seed | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// `len` bytes, half of them picked from `alphabet`.
pub fn garbage(seed: &mut u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
    (0..len)
        .map(|_| {
            let r = next(seed);
            if r & 1 == 0 && !alphabet.is_empty() {
                alphabet[(r >> 8) as usize % alphabet.len()]
            } else {
                (r >> 16) as u8
            }
        })
        .collect()
}

/// `base` with a few random mutations.
pub fn mutate(seed: &mut u64, base: &[u8], alphabet: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let n = 1 + next(seed) % 6;
    for _ in 0..n {
        let r = next(seed);
        let pos = if v.is_empty() {
            0
        } else {
            (r >> 8) as usize % (v.len() + 1)
        };
        match r % 5 {
            0 if pos < v.len() => v[pos] = (r >> 24) as u8,
            1 => {
                let b = alphabet
                    .get((r >> 32) as usize % alphabet.len().max(1))
                    .copied()
                    .unwrap_or(0);
                v.insert(pos, b);
            }
            2 if pos < v.len() => {
                v.remove(pos);
            }
            3 => {
                let end = (pos + (r >> 40) as usize % 16).min(v.len());
                let piece = v[pos.min(end)..end].to_vec();
                for (k, b) in piece.into_iter().enumerate() {
                    v.insert(pos + k, b);
                }
            }
            _ => v.truncate(pos),
        }
    }
    v
}
