//! PyTorch's CPU random stream (`torch.manual_seed`, `torch.Generator`): the MT19937 engine of
//! ATen and the draws CLIP_benchmark's linear probe takes from it (`randperm`, `uniform_` of
//! a float tensor, an int64 `random_`), so its weight initialisation and shuffles are
//! reproduced number for number. Checked against torch in `tests/fixtures/probe/adamw.json`.
//! Python's `random` runs the same engine, seeded another way ([`Generator::python`]):
//! CLIP_benchmark's `--distributed` shuffles its runs with it.

const N: usize = 624;
const M: usize = 397;

/// One generator: `torch.Generator().manual_seed(seed)` (only the seed's low 32 bits count,
/// as in ATen).
#[derive(Clone)]
pub struct Generator {
    state: [u32; N],
    next: usize,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1812433253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, next: N }
    }

    /// `random.seed(seed)` of Python's `random` module: the seed's 32-bit words (least
    /// significant first; one word for 0) through MT19937's `init_by_array`.
    pub fn python(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut g = Self::new(19_650_218);
        let s = &mut g.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            s[i] = (s[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            s[i] = (s[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
        }
        s[0] = 0x8000_0000;
        g
    }

    /// Python's `random.getrandbits(k)` for 1 <= k <= 32.
    fn python_bits(&mut self, k: u32) -> u32 {
        self.random() >> (32 - k)
    }

    /// Python's `random.shuffle(items)`: from the last item down, each swapped with one drawn
    /// below it by rejection (`_randbelow`: `n.bit_length()` bits until the draw is below n).
    pub fn python_shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let n = (i + 1) as u32;
            let k = u32::BITS - n.leading_zeros();
            let j = loop {
                let r = self.python_bits(k);
                if r < n {
                    break r as usize;
                }
            };
            items.swap(i, j);
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// `random()`: one tempered 32-bit output.
    pub fn random(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random64()`: two outputs, the first the high half.
    pub fn random64(&mut self) -> u64 {
        let hi = self.random() as u64;
        let lo = self.random() as u64;
        (hi << 32) | lo
    }

    /// `torch.empty((), dtype=torch.int64).random_()`: what a DataLoader and a RandomSampler
    /// draw as a seed.
    pub fn random_i64(&mut self) -> u64 {
        self.random64() % (1u64 << 63)
    }

    /// `torch.randperm(n, generator=g)` on the CPU (n below 2^32 / 20): Fisher-Yates forwards.
    pub fn randperm(&mut self, n: usize) -> Vec<usize> {
        let mut r: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = self.random() as usize % (n - i);
            r.swap(i, z + i);
        }
        r
    }

    /// One element of `uniform_(from, to)` on a float32 tensor: 24 random bits scaled in f64,
    /// then rounded to f32 (ATen's `uniform_real_distribution<float>`).
    pub fn uniform_f32(&mut self, from: f32, to: f32) -> f32 {
        let x = (self.random() & 0x00ff_ffff) as f64 / (1u64 << 24) as f64;
        (x * (to - from) as f64 + from as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_the_reference_mt19937() {
        // The 10,000th output of std::mt19937 seeded with 5489 (C++ standard, [rand.predef]).
        let mut g = Generator::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.random();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn python_seeding_and_shuffle_follow_cpython() {
        // Values printed by CPython 3.11: `random.seed(s)`, then `random.getrandbits(32)` or
        // `random.shuffle(list(range(n)))`.
        let mut g = Generator::python(0);
        let bits: Vec<u32> = (0..3).map(|_| g.python_bits(32)).collect();
        assert_eq!(bits, [3_626_764_237, 1_654_615_998, 3_255_389_356]);
        let shuffled = |seed: u64, n: usize| {
            let mut v: Vec<usize> = (0..n).collect();
            Generator::python(seed).python_shuffle(&mut v);
            v
        };
        assert_eq!(shuffled(0, 10), [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]);
        assert_eq!(
            shuffled(7, 24),
            [
                5, 18, 22, 15, 7, 14, 23, 21, 6, 19, 13, 16, 8, 0, 9, 11, 3, 17, 2, 1, 20, 12, 4,
                10
            ]
        );
        assert_eq!(
            shuffled((1 << 40) + 5, 12),
            [3, 5, 2, 9, 6, 7, 1, 10, 0, 4, 11, 8]
        );
        let long = shuffled(0, 1000);
        assert_eq!(long[..8], [439, 621, 160, 549, 237, 389, 658, 507]);
        let weighted: usize = long.iter().enumerate().map(|(i, v)| i * v).sum();
        assert_eq!(weighted, 251_292_570);
        assert_eq!(shuffled(0, 1), [0]);
        assert!(shuffled(0, 0).is_empty());
    }

    #[test]
    fn randperm_is_a_permutation() {
        let mut g = Generator::new(7);
        let mut p = g.randperm(1000);
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        assert!(Generator::new(7).randperm(0).is_empty());
        assert_eq!(Generator::new(7).randperm(1), vec![0]);
    }
}
