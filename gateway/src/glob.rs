//! Redis's glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]` and `\` escapes, with Redis's exact rules (a port of `stringmatchlen`, including its
//! bound on nesting and its early exit that keeps `a*a*a*...b` patterns linear per star).

/// Whether `string` matches `pattern`. `*` alone matches everything, the empty string included
/// (as `KEYS *` does in Redis).
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    if pattern == b"*" {
        return true;
    }
    let mut skip_longer = false;
    matches(pattern, string, &mut skip_longer, 0)
}

/// The literal text every match of `pattern` starts with: the pattern up to its first `*`, `?`
/// or `[`, escapes resolved. Scanning only keys with this prefix finds every match.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        match c {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                prefix.push(pattern[i + 1]);
                i += 2;
            }
            other => {
                prefix.push(other);
                i += 1;
            }
        }
    }
    prefix
}

fn matches(p: &[u8], s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    // Protection against abusive patterns, as in Redis.
    if nesting > 1000 {
        return false;
    }
    let (mut pi, mut si) = (0usize, 0usize);
    while pi < p.len() && si < s.len() {
        match p[pi] {
            b'*' => {
                while pi + 1 < p.len() && p[pi + 1] == b'*' {
                    pi += 1;
                }
                if pi + 1 == p.len() {
                    return true;
                }
                while si < s.len() {
                    if matches(&p[pi + 1..], &s[si..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    si += 1;
                }
                // The rest of the pattern matches nowhere in the rest of the string, so no
                // earlier star can help by matching more: stop trying.
                *skip_longer = true;
                return false;
            }
            b'?' => si += 1,
            b'[' => {
                pi += 1;
                let negate = p.get(pi) == Some(&b'^');
                if negate {
                    pi += 1;
                }
                let c = s[si];
                let mut matched = false;
                loop {
                    let left = p.len() - pi;
                    if left == 0 {
                        // An unclosed class ends the pattern.
                        pi -= 1;
                        break;
                    }
                    if p[pi] == b'\\' && left >= 2 {
                        pi += 1;
                        matched |= p[pi] == c;
                    } else if p[pi] == b']' {
                        break;
                    } else if left >= 3 && p[pi + 1] == b'-' {
                        let (lo, hi) = if p[pi] <= p[pi + 2] { (p[pi], p[pi + 2]) } else { (p[pi + 2], p[pi]) };
                        pi += 2;
                        matched |= (lo..=hi).contains(&c);
                    } else {
                        matched |= p[pi] == c;
                    }
                    pi += 1;
                }
                if matched == negate {
                    return false;
                }
                si += 1;
            }
            b'\\' => {
                if p.len() - pi >= 2 {
                    pi += 1;
                }
                if p[pi] != s[si] {
                    return false;
                }
                si += 1;
            }
            other => {
                if other != s[si] {
                    return false;
                }
                si += 1;
            }
        }
        pi += 1;
        if si == s.len() {
            while pi < p.len() && p[pi] == b'*' {
                pi += 1;
            }
            break;
        }
    }
    pi == p.len() && si == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn redis_glob_rules() {
        assert!(m("*", "") && m("*", "anything"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello") && !m("h*llo", "hellox"));
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo") && m("h[b-a]llo", "hallo"), "reversed ranges work");
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("[\\]]", "]") && !m("[]a]", "a"), "an escaped bracket; `[]` is an empty class, as in Redis");
        assert!(m("user:*:name", "user:42:name") && !m("user:*:name", "user:42:mail"));
        assert!(m("a*", "a") && m("a**", "a") && m("*a*", "bab") && !m("a*b", "a"));
        assert!(m("\\", "\\"), "a trailing backslash is literal");
        assert!(!m("ab[", "abx") && !m("ab[", "ab"), "an unclosed class is empty: it matches nothing (as in Redis)");
        assert!(!m("", "a") && m("", ""));
        // A pathological pattern ends quickly.
        let evil = "a*".repeat(40) + "b";
        assert!(!m(&evil, &"a".repeat(60)));
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b*c"), b"a*b");
        assert_eq!(literal_prefix(b"ab?c"), b"ab");
        assert_eq!(literal_prefix(b"ab[cd]"), b"ab");
        assert_eq!(literal_prefix(b"*"), b"");
        assert_eq!(literal_prefix(b"plain"), b"plain");
        assert_eq!(literal_prefix(b"x\\"), b"x\\");
    }

    proptest! {
        /// Every string a pattern matches starts with the pattern's literal prefix (so a scan of
        /// that prefix misses no match), and matching never panics.
        #[test]
        fn matches_start_with_the_literal_prefix(pattern in "[ab*?\\[\\]^\\\\-]{0,10}", s in "[ab*?\\[\\]\\\\]{0,10}") {
            if glob_match(pattern.as_bytes(), s.as_bytes()) {
                prop_assert!(s.as_bytes().starts_with(&literal_prefix(pattern.as_bytes())), "{:?} matched {:?}", pattern, s);
            }
        }

        /// A pattern without wildcards matches exactly itself.
        #[test]
        fn literal_patterns_match_only_themselves(p in "[a-z:]{0,8}", s in "[a-z:]{0,8}") {
            prop_assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), p == s);
        }
    }
}
