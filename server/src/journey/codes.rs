//! Design codes: short, typed by a pupil or read by a USB scanner (which types what the QR code
//! holds). No character that reads like another: no 0/O, 1/I/L, and no U/V pair (V stays).

use std::fmt;

use rand::Rng;

/// 30 symbols: digits 2-9 and capitals without I, L, O, U.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a code: 30^6 = 729 million codes, so a guessed code is almost never a design.
pub const LENGTH: usize = 6;

/// A well-formed code, in its canonical (upper-case, no separator) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesignCode(String);

impl DesignCode {
    pub fn random(rng: &mut impl Rng) -> Self {
        DesignCode(
            (0..LENGTH)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect(),
        )
    }

    /// What a person typed or a scanner sent: case, spaces and dashes do not matter, and the
    /// look-alikes are read as what they look like (O → 0 is not in the alphabet, so an `O` is
    /// an error, not a guess).
    pub fn parse(text: &str) -> Option<Self> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let ok = cleaned.len() == LENGTH && cleaned.bytes().all(|b| ALPHABET.contains(&b));
        ok.then_some(DesignCode(cleaned))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DesignCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_unambiguous_and_read_back_however_typed() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let code = DesignCode::random(&mut rng);
            assert_eq!(code.as_str().len(), LENGTH);
            assert!(!code.as_str().contains(['0', 'O', '1', 'I', 'L', 'U']));
            let typed = format!(" {}-{} ", &code.as_str()[..3], &code.as_str()[3..]);
            assert_eq!(DesignCode::parse(&typed.to_lowercase()), Some(code));
        }
        assert_eq!(DesignCode::parse("ABC12"), None);
        assert_eq!(DesignCode::parse("ABCDEO"), None);
        assert_eq!(DesignCode::parse("ABCDEFG"), None);
    }
}
