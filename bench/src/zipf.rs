//! The zipfian distribution of YCSB (Gray et al., "Quickly Generating
//! Billion-Record Synthetic Databases", SIGMOD 1994): rank 0 is the most popular,
//! rank i has weight 1 / (i + 1)^θ. Drawing is O(1) after an O(n) set-up; the item
//! count may grow (YCSB D's `latest`), extending the set-up incrementally.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// FNV-1a 64: YCSB's key hash (a fixed function, the same everywhere).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A zipfian distribution over `0..n`.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    zeta_2: f64,
    eta: f64,
}

fn zeta_range(from: u64, to: u64, theta: f64) -> f64 {
    (from..to).map(|i| 1.0 / ((i + 1) as f64).powf(theta)).sum()
}

impl Zipfian {
    /// Over `0..n` (n ≥ 1) with constant `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let zeta_2 = zeta_range(0, 2, theta);
        let mut z = Zipfian { n, theta, alpha: 1.0 / (1.0 - theta), zeta_n: zeta_range(0, n, theta), zeta_2, eta: 0.0 };
        z.eta = z.eta_for();
        z
    }

    fn eta_for(&self) -> f64 {
        (1.0 - (2.0 / self.n as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta_2 / self.zeta_n)
    }

    /// A rank in `0..n`.
    pub fn next(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// A rank in `0..count`, first growing the distribution to `count` items if it
    /// has fewer (incrementally: only the new terms are summed).
    pub fn next_below(&mut self, rng: &mut ChaCha8Rng, count: u64) -> u64 {
        if count > self.n {
            self.zeta_n += zeta_range(self.n, count, self.theta);
            self.n = count;
            self.eta = self.eta_for();
        }
        self.next(rng).min(count.max(1) - 1)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn fnv_matches_published_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn frequencies_follow_the_power_law() {
        let z = Zipfian::new(1000, 0.99);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[z.next(&mut rng) as usize] += 1;
        }
        // Weight ratio of rank 0 to rank 9 is 10^0.99 ≈ 9.8.
        let ratio = f64::from(counts[0]) / f64::from(counts[9]);
        assert!((7.0..13.0).contains(&ratio), "rank 0 / rank 9 = {ratio}");
        assert!(counts[999] < counts[0] / 100);
    }

    #[test]
    fn growing_matches_a_fresh_set_up() {
        let mut grown = Zipfian::new(100, 0.99);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        grown.next_below(&mut rng, 5000);
        let fresh = Zipfian::new(5000, 0.99);
        assert!((grown.zeta_n - fresh.zeta_n).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-9);
        for _ in 0..1000 {
            assert!(grown.next_below(&mut rng, 5000) < 5000);
        }
    }

    #[test]
    fn one_item_always_draws_zero() {
        let z = Zipfian::new(1, 0.99);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!((0..100).all(|_| z.next(&mut rng) == 0));
    }
}
