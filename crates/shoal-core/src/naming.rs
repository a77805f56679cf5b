//! File names that are safe to create: whatever a server, a document or a peer calls a file,
//! [`sanitize_file_name`] makes of it a name that stays inside the directory it is joined to.

/// Most file systems allow 255 bytes per name; this leaves room for suffixes such as `.part`.
pub const MAX_NAME_BYTES: usize = 200;

/// A name safe to join to a directory: the last component only, no control characters, not
/// `.` or `..`, not hidden behind leading dots, bounded in length. `None` if nothing is left.
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_string();
    if cleaned.is_empty() {
        return None;
    }
    let mut end = cleaned.len().min(MAX_NAME_BYTES);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    Some(cleaned[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ordinary_names() {
        for name in [
            "big file.iso",
            "r.tar.gz",
            "a;b.txt",
            "naïve.txt",
            "x.bashrc",
        ] {
            assert_eq!(sanitize_file_name(name).as_deref(), Some(name));
        }
    }

    #[test]
    fn hostile_names_are_neutralized() {
        for (name, expected) in [
            ("../../etc/passwd", Some("passwd")),
            ("..\\..\\boot.ini", Some("boot.ini")),
            ("a/b/../evil", Some("evil")),
            ("a\u{7}b\u{0}c\nd", Some("abcd")),
            (".bashrc", Some("bashrc")),
            ("  spaced  ", Some("spaced")),
            ("..", None),
            (".", None),
            ("dir/", None),
            ("", None),
            ("\u{0}\u{1b}", None),
        ] {
            assert_eq!(sanitize_file_name(name).as_deref(), expected, "{name:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = sanitize_file_name(&"é".repeat(300)).unwrap();
        assert!(name.len() <= MAX_NAME_BYTES && name.len() >= MAX_NAME_BYTES - 1);
        assert!(name.chars().all(|c| c == 'é'));
    }
}
