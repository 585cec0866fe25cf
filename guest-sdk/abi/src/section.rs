//! The `molt.module` custom section, in which a guest declares its name,
//! version and ABI version.
//!
//! Content: UTF-8 lines `key=value`, separated by `\n`. Keys: `name`,
//! `version`, `abi` (decimal). Unknown keys are ignored, so later ABIs can
//! add some. The SDK writes it; a hand-written module may too. A module
//! without it is named after its file and versioned by its content hash.

/// Name of the custom section.
pub const NAME: &str = "molt.module";

/// Longest module name, in bytes.
pub const MODULE_NAME_BYTES_MAX: usize = 128;
/// Longest version string, in bytes.
pub const VERSION_BYTES_MAX: usize = 128;

/// What a `molt.module` section declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declared<'a> {
    /// Module name.
    pub name: &'a str,
    /// Version string.
    pub version: &'a str,
    /// ABI version the module was built against.
    pub abi: u32,
}

/// Why a `molt.module` section was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionError {
    /// Not UTF-8.
    NotUtf8,
    /// A line without `=`.
    BadLine,
    /// `name`, `version` or `abi` is missing or empty.
    Missing(&'static str),
    /// `abi` is not a decimal number.
    BadAbi,
    /// A name or version is too long or has characters other than
    /// letters, digits and `_ - . + @`.
    BadValue(&'static str),
}

fn valid_value(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'@'))
}

/// Whether `name` is acceptable as a module name.
pub fn valid_module_name(name: &str) -> bool {
    valid_value(name, MODULE_NAME_BYTES_MAX)
}

/// Parse a section's content.
pub fn parse(bytes: &[u8]) -> Result<Declared<'_>, SectionError> {
    let text = core::str::from_utf8(bytes).map_err(|_| SectionError::NotUtf8)?;
    let (mut name, mut version, mut abi) = (None, None, None);
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or(SectionError::BadLine)?;
        match k {
            "name" => name = Some(v),
            "version" => version = Some(v),
            "abi" => abi = Some(v.parse::<u32>().map_err(|_| SectionError::BadAbi)?),
            _ => {}
        }
    }
    let name = name.ok_or(SectionError::Missing("name"))?;
    let version = version.ok_or(SectionError::Missing("version"))?;
    let abi = abi.ok_or(SectionError::Missing("abi"))?;
    if !valid_value(name, MODULE_NAME_BYTES_MAX) {
        return Err(SectionError::BadValue("name"));
    }
    if !valid_value(version, VERSION_BYTES_MAX) {
        return Err(SectionError::BadValue("version"));
    }
    Ok(Declared { name, version, abi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_output() {
        let d = parse(b"name=counter\nversion=1.2.0\nabi=1\n").unwrap();
        assert_eq!(
            d,
            Declared {
                name: "counter",
                version: "1.2.0",
                abi: 1
            }
        );
        assert_eq!(
            parse(b"name=x\nabi=1"),
            Err(SectionError::Missing("version"))
        );
        assert_eq!(
            parse(b"name=a b\nversion=1\nabi=1"),
            Err(SectionError::BadValue("name"))
        );
        assert_eq!(parse(b"junk"), Err(SectionError::BadLine));
        assert_eq!(parse(&[0xff]), Err(SectionError::NotUtf8));
    }
}
