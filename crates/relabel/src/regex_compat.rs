//! Go RE2 patterns for the `regex` crate. The two share their syntax, but Go's `\d`,
//! `\w`, `\s` and `\b` are ASCII-only where the `regex` crate's are Unicode-aware, so
//! `\d` would match `٣` here and not in Prometheus. The rewrite spells those classes
//! out in ASCII; everything else passes through unchanged.

/// Rewrites Go's Perl classes to their ASCII meaning, inside and outside `[...]`.
pub fn go_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_class_start = std::mem::take(&mut class_start);
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let ascii = match next {
                    'd' => Some(("0-9", false)),
                    'D' => Some(("0-9", true)),
                    'w' => Some(("0-9A-Za-z_", false)),
                    'W' => Some(("0-9A-Za-z_", true)),
                    's' => Some((r"\t\n\f\r ", false)),
                    'S' => Some((r"\t\n\f\r ", true)),
                    _ => None,
                };
                match (ascii, in_class) {
                    (Some((set, false)), false) => {
                        out.push('[');
                        out.push_str(set);
                        out.push(']');
                    }
                    (Some((set, true)), false) => {
                        out.push_str("[^");
                        out.push_str(set);
                        out.push(']');
                    }
                    (Some((set, false)), true) => out.push_str(set),
                    // A negated class inside a class has no flat ASCII spelling; the
                    // regex crate's own meaning is kept (rare in relabeling).
                    _ if !in_class && (next == 'b' || next == 'B') => {
                        out.push_str("(?-u:\\");
                        out.push(next);
                        out.push(')');
                    }
                    _ => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                class_start = true;
            }
            '[' if chars.peek() == Some(&':') => {
                // `[:alpha:]` inside a class: copy it whole.
                out.push('[');
                for c in chars.by_ref() {
                    out.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            ']' if in_class && !at_class_start => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::go_to_rust;

    #[test]
    fn perl_classes_become_ascii() {
        assert_eq!(go_to_rust(r"(\d+)"), "([0-9]+)");
        assert_eq!(go_to_rust(r"[\d.]+"), "[0-9.]+");
        assert_eq!(go_to_rust(r"\W\S"), r"[^0-9A-Za-z_][^\t\n\f\r ]");
        assert_eq!(go_to_rust(r"a\.b\\d"), r"a\.b\\d");
        assert_eq!(go_to_rust(r"[]\d]"), "[]0-9]");
        assert_eq!(go_to_rust(r"[^]a]\d"), "[^]a][0-9]");
        assert_eq!(go_to_rust(r"[[:alpha:]\w]"), "[[:alpha:]0-9A-Za-z_]");
        assert_eq!(go_to_rust(r"\bx"), r"(?-u:\b)x");
        let re = regex::Regex::new(&format!("^(?:{})$", go_to_rust(r"\d+\b"))).unwrap();
        assert!(re.is_match("123"));
        assert!(!re.is_match("١٢٣"));
    }
}
