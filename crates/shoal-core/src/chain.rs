//! An error and its causes as one line of text, as shoal prints every failure.

use std::error::Error;

/// An error and its causes on one line. A cause whose text the message already holds is
/// skipped: library errors often print their source inline and also expose it as `source()`.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    append_causes(&mut text, err.source());
    text
}

/// Appends `: ` and the text of `cause` and each cause under it to `text`, skipping those
/// whose text is already there.
pub fn append_causes(text: &mut String, mut cause: Option<&(dyn Error + 'static)>) {
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::io;

    #[derive(Debug)]
    struct Wrapper(io::Error, bool);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.1 {
                write!(f, "writing x.part: {}", self.0)
            } else {
                f.write_str("writing x.part")
            }
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn one_line_without_repeats() {
        let inline = Wrapper(io::Error::other("disk full"), true);
        assert_eq!(chain(&inline), "writing x.part: disk full");
        let separate = Wrapper(io::Error::other("disk full"), false);
        assert_eq!(chain(&separate), "writing x.part: disk full");
        let mut text = String::new();
        append_causes(&mut text, Some(&separate));
        assert_eq!(text, ": writing x.part: disk full");
    }
}
