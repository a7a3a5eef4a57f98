//! Socket ids: `"<random>.<unique>"`, two unsigned decimal integers (docs/protocol.md#socket-ids requires
//! `^\d+\.\d+$`).
//!
//! The second half is unique across the process: a per-core counter with the core number in its low bits, so cores
//! never coordinate. The first half is random so ids are not guessable. Both halves stay below 2^53 so a client
//! that parses them as numbers loses nothing.

use std::cell::Cell;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    pub random: u64,
    pub unique: u64,
}

impl SocketId {
    /// Parses `"123.456"`; anything else (signs, hex, spaces, extra dots) is refused.
    pub fn parse(s: &str) -> Option<SocketId> {
        let (a, b) = s.split_once('.')?;
        let num = |p: &str| -> Option<u64> {
            if p.is_empty() || p.len() > 19 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        Some(SocketId {
            random: num(a)?,
            unique: num(b)?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.random, self.unique)
    }
}

/// Bits of the unique half reserved for the core number.
const CORE_BITS: u32 = 10;
/// Most cores a process may run: every core needs its own number in the ids it hands out.
pub const MAX_CORES: usize = 1 << CORE_BITS;
const MAX_HALF: u64 = (1 << 53) - 1;

/// One per core; not shared.
pub struct SocketIdGen {
    core: u64,
    counter: Cell<u64>,
    rng: Cell<u64>,
}

/// 64 random bits from the kernel, for seeds (ids that must not be guessed or repeat across runs).
pub fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(seed);
    }
    // No entropy syscall: fall back to time and address bits; ids stay unique, only less random.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ (&seed as *const _ as u64)
}

impl SocketIdGen {
    pub fn new(core: usize) -> Self {
        assert!(core < MAX_CORES, "core {core} has no room in socket ids");
        SocketIdGen {
            core: core as u64,
            counter: Cell::new(0),
            rng: Cell::new(random_seed() | 1),
        }
    }

    pub fn next(&self) -> SocketId {
        let c = self.counter.get() + 1;
        self.counter.set(c);
        // xorshift64*: cheap and good enough to make ids unguessable by a casual client.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let random = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) & MAX_HALF).max(1);
        SocketId {
            random,
            unique: ((c << CORE_BITS) | self.core) & MAX_HALF,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_cores_and_round_trip() {
        let a = SocketIdGen::new(0);
        let b = SocketIdGen::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            for id in [a.next(), b.next()] {
                let text = id.to_string();
                assert_eq!(SocketId::parse(&text), Some(id));
                assert!(seen.insert(id.unique));
            }
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "", "1", "1.", ".1", "a.1", "-1.2", "1.2.3", "1 .2", "0x1.2", "+1.2",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            SocketId::parse("1234.5678"),
            Some(SocketId {
                random: 1234,
                unique: 5678
            })
        );
    }
}
