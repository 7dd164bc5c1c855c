//! Tokens. A token is `ID.SECRET` in kubeadm's bootstrap-token shape (6 and 16
//! characters of `[a-z0-9]`): the ID names it in lists and deletes, the secret is
//! stored only as a hash. A join token prefixes it with the CA's hash the way k3s
//! does, `K10<sha256 of the CA>::ID.SECRET`, so a new node can check the server it
//! reached is the cluster's before it sends the secret.

use crate::TlsError;

/// What a join token starts with (k3s's version prefix).
pub const JOIN_PREFIX: &str = "K10";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `ID.SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.****)", self.id)
    }
}

fn random_chars(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 1];
        if rng.fill(&mut b).is_err() {
            continue;
        }
        // 252 = 7 × 36: rejecting the rest keeps every character equally likely.
        if b[0] < 252 {
            out.push(ALPHABET[usize::from(b[0]) % ALPHABET.len()] as char);
        }
    }
    out
}

fn well_formed(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl Token {
    pub fn generate() -> Token {
        Token {
            id: random_chars(ID_LEN),
            secret: random_chars(SECRET_LEN),
        }
    }

    /// Reads `ID.SECRET`.
    pub fn parse(s: &str) -> Result<Token, TlsError> {
        let s = s.trim();
        let bad = || {
            TlsError::Token(format!(
                "a token is ID.SECRET: {ID_LEN} and {SECRET_LEN} characters of a-z and 0-9 (as `tug token create` prints it)"
            ))
        };
        let (id, secret) = s.split_once('.').ok_or_else(bad)?;
        if !well_formed(id, ID_LEN) || !well_formed(secret, SECRET_LEN) {
            return Err(bad());
        }
        Ok(Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Whether `s` is the ID of a token.
    pub fn is_id(s: &str) -> bool {
        well_formed(s, ID_LEN)
    }

    /// What is stored instead of the secret.
    pub fn secret_hash(&self) -> String {
        crate::sha256_hex(self.secret.as_bytes())
    }

    /// `ID.SECRET`.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// `K10<CA hash>::ID.SECRET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA certificate as `/cacerts` serves it.
    pub ca_hash: String,
    pub token: Token,
}

impl JoinToken {
    pub fn parse(s: &str) -> Result<JoinToken, TlsError> {
        let s = s.trim();
        let bad = |why: &str| {
            TlsError::Token(format!(
                "a join token is K10<sha256 of the CA>::ID.SECRET, as `tug token create` prints it: {why}"
            ))
        };
        let rest = s
            .strip_prefix(JOIN_PREFIX)
            .ok_or_else(|| bad("it does not start with K10"))?;
        let (hash, token) = rest
            .split_once("::")
            .ok_or_else(|| bad("there is no :: after the CA hash"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            token: Token::parse(token)?,
        })
    }

    /// The token as a user passes it on.
    pub fn reveal(&self) -> String {
        format!("{JOIN_PREFIX}{}::{}", self.ca_hash, self.token.reveal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_join_token_reads_back() {
        let t = JoinToken {
            ca_hash: crate::sha256_hex(b"ca"),
            token: Token::generate(),
        };
        let text = t.reveal();
        assert!(text.starts_with("K10"));
        assert_eq!(JoinToken::parse(&text).unwrap(), t);
        assert!(!format!("{:?}", t.token).contains(&t.token.secret));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let hash = crate::sha256_hex(b"ca");
        for (text, says) in [
            ("abcdef.0123456789abcdef".to_string(), "K10"),
            (format!("K10{hash}abcdef.0123456789abcdef"), "::"),
            ("K10abc::abcdef.0123456789abcdef".to_string(), "64 hex"),
            (format!("K10{hash}::abcdef.short"), "16"),
            (format!("K10{hash}::ABCDEF.0123456789abcdef"), "a-z"),
        ] {
            let e = JoinToken::parse(&text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(Token::generate(), Token::generate());
        assert!(Token::is_id(&Token::generate().id));
    }
}
