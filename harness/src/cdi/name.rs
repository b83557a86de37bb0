//! CDI device-name syntax, checked with the same rules as the Go reference library
//! (`tags.cncf.io/container-device-interface/pkg/parser`), so that a name this module
//! accepts is one `docker run --device vendor.com/class=name` can resolve.
//!
//! The rules, from `pkg/parser/parser.go`:
//! - vendor and class: start with an ASCII letter, end with a letter or digit, and
//!   contain only letters, digits, `_`, `-` and `.` in between;
//! - device name: start and end with a letter or digit, and contain only letters,
//!   digits, `_`, `-`, `.` and `:` in between (a single letter or digit is fine).
//!
//! One deliberate extra: a one-character vendor or class is refused. The Go code
//! slices `name[1:len(name)-1]`, which is out of range for a one-byte string, so the
//! engine would panic on it rather than accept it.

use std::fmt;

/// Which part of a qualified name an error is about, so messages can say
/// "vendor", "class" or "device name" instead of a generic "name".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    /// The `vendor.com` in `vendor.com/class=name`.
    Vendor,
    /// The `class` in `vendor.com/class=name`.
    Class,
    /// The `name` in `vendor.com/class=name`.
    DeviceName,
    /// The whole `vendor.com/class` pair, as in a spec's `kind` field.
    Kind,
}

impl fmt::Display for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamePart::Vendor => "vendor",
            NamePart::Class => "class",
            NamePart::DeviceName => "device name",
            NamePart::Kind => "kind",
        })
    }
}

/// Characters allowed inside a vendor or class, as shown in error messages.
const VENDOR_CLASS_ALLOWED: &str = "letters, digits, '_', '-', '.'";
/// Characters allowed inside a device name, as shown in error messages.
const DEVICE_NAME_ALLOWED: &str = "letters, digits, '_', '-', '.', ':'";

/// Why a CDI name was refused. Every message names the rule that was broken, so a
/// user can fix the spec or the `--device` argument without reading the CDI source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string is not of the form `vendor/class=name`.
    #[error(
        "device {input:?} is not fully qualified: {problem} (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    Unqualified {
        /// The string as given.
        input: String,
        /// What is missing or malformed.
        problem: &'static str,
    },
    /// A `kind` without the `/` between vendor and class.
    #[error("kind {input:?} is not of the form vendor/class (e.g. nvidia.com/gpu): {problem}")]
    BadKind {
        /// The kind as given.
        input: String,
        /// What is missing or malformed.
        problem: &'static str,
    },
    /// An empty vendor, class or device name.
    #[error("{part} is empty")]
    Empty {
        /// Which part is empty.
        part: NamePart,
    },
    /// The first character is not allowed there.
    #[error("{part} {value:?} must start with {expected}")]
    BadStart {
        /// Which part.
        part: NamePart,
        /// The offending value.
        value: String,
        /// What the first character must be.
        expected: &'static str,
    },
    /// The last character is not a letter or digit.
    #[error("{part} {value:?} must end with a letter or digit")]
    BadEnd {
        /// Which part.
        part: NamePart,
        /// The offending value.
        value: String,
    },
    /// A character that the part may not contain.
    #[error("{part} {value:?} contains {ch:?} (allowed: {allowed})")]
    BadChar {
        /// Which part.
        part: NamePart,
        /// The offending value.
        value: String,
        /// The first character that is not allowed.
        ch: char,
        /// The allowed characters, in words.
        allowed: &'static str,
    },
    /// A one-character vendor or class (see the module docs: the Go parser panics on it).
    #[error(
        "{part} {value:?} is a single character: the Go CDI parser the engine uses slices name[1:len-1] and panics on it; use at least two characters"
    )]
    SingleChar {
        /// Which part.
        part: NamePart,
        /// The offending value.
        value: String,
    },
}

/// A parsed fully-qualified CDI device name `vendor.com/class=name`, the form the
/// engine accepts in `--device` and lists in `docker info`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// The vendor, e.g. `nvidia.com`.
    pub vendor: String,
    /// The device class, e.g. `gpu`.
    pub class: String,
    /// The device name within the kind, e.g. `0`, `all` or a GPU UUID.
    pub name: String,
}

impl QualifiedName {
    /// Parses and checks `vendor/class=name` with the Go library's rules, so a name that
    /// parses here is one the engine can resolve (if some spec defines it).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "it is empty",
            });
        }
        if s.starts_with('/') {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "it is a path, not a CDI name",
            });
        }
        let Some((kind, name)) = s.split_once('=') else {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "there is no '=' before the device name",
            });
        };
        if name.is_empty() {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "the device name after '=' is empty",
            });
        }
        let Some((vendor, class)) = kind.split_once('/') else {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "there is no '/' between vendor and class",
            });
        };
        if vendor.is_empty() {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "the vendor before '/' is empty",
            });
        }
        if class.is_empty() {
            return Err(NameError::Unqualified {
                input: s.to_owned(),
                problem: "the class between '/' and '=' is empty",
            });
        }
        validate_vendor(vendor)?;
        validate_class(class)?;
        validate_device_name(name)?;
        Ok(QualifiedName {
            vendor: vendor.to_owned(),
            class: class.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The `vendor/class` pair, which is what a spec's `kind` field holds; lets callers
    /// find the spec that should define this device.
    pub fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

impl std::str::FromStr for QualifiedName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QualifiedName::parse(s)
    }
}

/// Checks a spec's `kind` (`vendor/class`) the way the engine does before it accepts
/// the spec; everything after the first `/` is the class, so `a.com/b/c` fails on the
/// class containing `/`.
pub fn validate_kind(kind: &str) -> Result<(), NameError> {
    let Some((vendor, class)) = kind.split_once('/') else {
        return Err(NameError::BadKind {
            input: kind.to_owned(),
            problem: "there is no '/'",
        });
    };
    if vendor.is_empty() {
        return Err(NameError::BadKind {
            input: kind.to_owned(),
            problem: "the vendor before '/' is empty",
        });
    }
    if class.is_empty() {
        return Err(NameError::BadKind {
            input: kind.to_owned(),
            problem: "the class after '/' is empty",
        });
    }
    validate_vendor(vendor)?;
    validate_class(class)
}

/// Checks a vendor (`nvidia.com`) with the engine's rules.
pub fn validate_vendor(vendor: &str) -> Result<(), NameError> {
    validate_vendor_or_class(NamePart::Vendor, vendor)
}

/// Checks a class (`gpu`) with the engine's rules.
pub fn validate_class(class: &str) -> Result<(), NameError> {
    validate_vendor_or_class(NamePart::Class, class)
}

/// Checks the unqualified device name (`0`, `all`, `GPU-…`, `0:1`) with the engine's rules.
pub fn validate_device_name(name: &str) -> Result<(), NameError> {
    let part = NamePart::DeviceName;
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty { part });
    };
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart {
            part,
            value: name.to_owned(),
            expected: "a letter or digit",
        });
    }
    let Some(last) = chars.next_back() else {
        return Ok(());
    };
    if let Some(ch) =
        chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(NameError::BadChar {
            part,
            value: name.to_owned(),
            ch,
            allowed: DEVICE_NAME_ALLOWED,
        });
    }
    if !last.is_ascii_alphanumeric() {
        return Err(NameError::BadEnd {
            part,
            value: name.to_owned(),
        });
    }
    Ok(())
}

/// Shared rule for vendor and class (`validateVendorOrClassName` in the Go parser).
fn validate_vendor_or_class(part: NamePart, value: &str) -> Result<(), NameError> {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty { part });
    };
    if !first.is_ascii_alphabetic() {
        return Err(NameError::BadStart {
            part,
            value: value.to_owned(),
            expected: "a letter",
        });
    }
    let Some(last) = chars.next_back() else {
        return Err(NameError::SingleChar {
            part,
            value: value.to_owned(),
        });
    };
    if let Some(ch) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(NameError::BadChar {
            part,
            value: value.to_owned(),
            ch,
            allowed: VENDOR_CLASS_ALLOWED,
        });
    }
    if !last.is_ascii_alphanumeric() {
        return Err(NameError::BadEnd {
            part,
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::index("nvidia.com/gpu=0", "nvidia.com", "gpu", "0")]
    #[case::all("nvidia.com/gpu=all", "nvidia.com", "gpu", "all")]
    #[case::uuid(
        "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
        "nvidia.com",
        "gpu",
        "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
    )]
    #[case::mig("nvidia.com/mig=0:1", "nvidia.com", "mig", "0:1")]
    #[case::dotted_class("vendor.com/foo-bar123.B_az=x", "vendor.com", "foo-bar123.B_az", "x")]
    fn parses_valid_names(
        #[case] input: &str,
        #[case] vendor: &str,
        #[case] class: &str,
        #[case] name: &str,
    ) {
        let q = QualifiedName::parse(input).expect("valid name");
        assert_eq!(
            (q.vendor.as_str(), q.class.as_str(), q.name.as_str()),
            (vendor, class, name)
        );
        assert_eq!(q.to_string(), input, "Display round-trips");
        assert_eq!(q.kind(), format!("{vendor}/{class}"));
    }

    #[rstest]
    #[case::empty(
        "",
        "device \"\" is not fully qualified: it is empty (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::path(
        "/dev/nvidia0",
        "device \"/dev/nvidia0\" is not fully qualified: it is a path, not a CDI name (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::no_equals(
        "nvidia.com/gpu",
        "device \"nvidia.com/gpu\" is not fully qualified: there is no '=' before the device name (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::empty_name(
        "nvidia.com/gpu=",
        "device \"nvidia.com/gpu=\" is not fully qualified: the device name after '=' is empty (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::no_slash(
        "gpu=0",
        "device \"gpu=0\" is not fully qualified: there is no '/' between vendor and class (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::empty_vendor(
        "/gpu=0",
        "device \"/gpu=0\" is not fully qualified: it is a path, not a CDI name (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::empty_class(
        "nvidia.com/=0",
        "device \"nvidia.com/=0\" is not fully qualified: the class between '/' and '=' is empty (expected vendor.com/class=name, e.g. nvidia.com/gpu=0)"
    )]
    #[case::space_in_name(
        "nvidia.com/gpu=a b",
        "device name \"a b\" contains ' ' (allowed: letters, digits, '_', '-', '.', ':')"
    )]
    #[case::name_ends_badly(
        "nvidia.com/gpu=gpu-",
        "device name \"gpu-\" must end with a letter or digit"
    )]
    #[case::name_starts_badly(
        "nvidia.com/gpu=_x",
        "device name \"_x\" must start with a letter or digit"
    )]
    #[case::vendor_digit_start(
        "1vendor.com/gpu=0",
        "vendor \"1vendor.com\" must start with a letter"
    )]
    #[case::vendor_colon(
        "nvidia:com/gpu=0",
        "vendor \"nvidia:com\" contains ':' (allowed: letters, digits, '_', '-', '.')"
    )]
    #[case::class_with_slash(
        "vendor.com/foo/bar=0",
        "class \"foo/bar\" contains '/' (allowed: letters, digits, '_', '-', '.')"
    )]
    #[case::class_trailing_dot(
        "vendor.com/gpu.=0",
        "class \"gpu.\" must end with a letter or digit"
    )]
    #[case::single_char_vendor(
        "a/gpu=0",
        "vendor \"a\" is a single character: the Go CDI parser the engine uses slices name[1:len-1] and panics on it; use at least two characters"
    )]
    #[case::second_equals(
        "nvidia.com/gpu=x=y",
        "device name \"x=y\" contains '=' (allowed: letters, digits, '_', '-', '.', ':')"
    )]
    #[case::non_ascii(
        "nvidia.com/gpu=gpü0",
        "device name \"gpü0\" contains 'ü' (allowed: letters, digits, '_', '-', '.', ':')"
    )]
    fn rejects_invalid_names(#[case] input: &str, #[case] message: &str) {
        let err = QualifiedName::parse(input).expect_err("must be rejected");
        assert_eq!(err.to_string(), message);
    }

    #[rstest]
    #[case::plain("nvidia.com/gpu", None)]
    #[case::dotted_class("nvidia.com/gpu.mig", None)]
    #[case::no_slash(
        "nvidia.com",
        Some(
            "kind \"nvidia.com\" is not of the form vendor/class (e.g. nvidia.com/gpu): there is no '/'"
        )
    )]
    #[case::trailing_slash(
        "vendor.com/foo/",
        Some("class \"foo/\" must end with a letter or digit")
    )]
    #[case::empty_class(
        "vendor.com/",
        Some(
            "kind \"vendor.com/\" is not of the form vendor/class (e.g. nvidia.com/gpu): the class after '/' is empty"
        )
    )]
    #[case::empty_vendor(
        "/gpu",
        Some(
            "kind \"/gpu\" is not of the form vendor/class (e.g. nvidia.com/gpu): the vendor before '/' is empty"
        )
    )]
    #[case::single_char_class(
        "nvidia.com/g",
        Some(
            "class \"g\" is a single character: the Go CDI parser the engine uses slices name[1:len-1] and panics on it; use at least two characters"
        )
    )]
    fn validates_kinds(#[case] kind: &str, #[case] expected: Option<&str>) {
        assert_eq!(
            validate_kind(kind).err().map(|e| e.to_string()).as_deref(),
            expected
        );
    }

    #[rstest]
    #[case::single_digit("0", true)]
    #[case::single_letter("a", true)]
    #[case::colon_inside("0:1", true)]
    #[case::colon_at_end("0:", false)]
    #[case::dash_start("-0", false)]
    #[case::empty("", false)]
    #[case::equals_inside("a=b", false)]
    fn validates_device_names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(validate_device_name(name).is_ok(), ok, "{name:?}");
    }
}
