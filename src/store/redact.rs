//! Database urls without their secrets, for messages and logs.

/// A database url without its secrets, for messages and logs: the password of the userinfo
/// (`postgres://user:***@host/db`) and of every query parameter named like one (`password`,
/// `sslpassword`, in any case or percent-encoding: `?password=***`, `&sslpassword=***`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = redact_userinfo(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if names_a_password(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

/// `scheme://user:password@host…` with the password replaced; the last `@` ends the userinfo,
/// so a password holding `@`, `:` or `/` is hidden whole.
fn redact_userinfo(base: &str) -> String {
    let Some(scheme) = base.find("://") else {
        return base.to_string();
    };
    let start = scheme + 3;
    match base[start..].rfind('@') {
        Some(at) => match base[start..start + at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..start], &base[start + at..]),
            None => base.to_string(),
        },
        None => base.to_string(),
    }
}

/// Whether a query key, percent-decoded as the driver reads it, names a password.
fn names_a_password(key: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(key).collect();
    decoded.to_ascii_lowercase().ends_with(b"password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://boxoffice.db"), "sqlite://boxoffice.db");
    }

    #[test]
    fn a_userinfo_password_is_hidden_whole() {
        assert_eq!(
            redact("postgres://u:s3:cr@t/x@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://:secret@h/db"), "postgres://:***@h/db");
    }

    #[test]
    fn a_password_in_the_query_is_redacted() {
        assert_eq!(
            redact("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=secret&application_name=a"),
            "postgres://u@h/db?sslmode=require&password=***&application_name=a"
        );
        assert_eq!(
            redact("postgres://u:one@h/db?sslpassword=two&PassWord=three&pass%77ord=four"),
            "postgres://u:***@h/db?sslpassword=***&PassWord=***&pass%77ord=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?password=a@b&x=1"),
            "postgres://u@h/db?password=***&x=1"
        );
        assert_eq!(
            redact("sqlite://f.db?mode=ro"),
            "sqlite://f.db?mode=ro",
            "other parameters stay"
        );
    }
}
