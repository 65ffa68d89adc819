//! Token hygiene: tokens are secrets even in a simulator (tests may reuse
//! real-looking ones), so they are never logged or put in errors in full.

/// A masked, loggable form of a bot token: the numeric bot id before `:` is
/// kept, the secret is replaced by `***` (`"123:***"`); tokens without that
/// shape keep at most their first 4 characters.
pub fn masked_token(token: &str) -> String {
    match token.split_once(':') {
        Some((id, _))
            if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{id}:***")
        }
        _ if token.chars().count() >= 12 => {
            let prefix: String = token.chars().take(4).collect();
            format!("{prefix}***")
        }
        _ => "***".to_owned(),
    }
}

/// Whether a token can appear as the `bot<token>` path segment.
pub(crate) fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && !token
            .chars()
            .any(|c| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_part() {
        assert_eq!(masked_token("123456:AAF7-secret"), "123456:***");
        assert_eq!(masked_token("plain-token-secret"), "plai***");
        assert_eq!(masked_token("ab"), "***");
        assert_eq!(masked_token("x:y"), "***");
    }

    #[test]
    fn validates_tokens() {
        assert!(is_valid_token("1:abc"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("a/b"));
        assert!(!is_valid_token("a b"));
    }
}
