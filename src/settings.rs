//! Groups of settings, each setting declared once: its help, its type and its default in one list
//! ([`settings!`]), from which come the settings themselves (with their `Default`, read from
//! TOML and JSON with every missing key at its default and an unknown key refused) and the same
//! settings as optional flags (`--name`; each flag given replaces the file's or the default
//! value), whose help shows the default. Settings files use the flags' names with `_`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `value` as a settings file writes it: through TOML text, so an f32 is as short as it reads
/// back (`0.1701`) rather than widened to f64 (`0.17010000348091125`), and a value from a flag,
/// a file or a run's record compares equal when it is the same setting.
pub fn as_table<T: Serialize>(value: &T) -> toml::Table {
    let text = toml::to_string(value).expect("settings serialise as TOML");
    toml::from_str(&text).expect("TOML text reads back")
}

/// One help line: `doc`'s lines joined, then the default as a settings file writes it
/// (`[default: 0.0001]`); nothing for a setting without one.
pub fn help_with_default<T: Serialize>(doc: &str, default: &T) -> String {
    let words = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    // As clap writes a one-sentence doc comment: without its full stop.
    let help = words.strip_suffix('.').unwrap_or(&words);
    #[derive(Serialize)]
    struct Entry<'a, T> {
        v: &'a T,
    }
    match as_table(&Entry { v: default }).remove("v") {
        Some(toml::Value::String(text)) => format!("{help} [default: {text}]"),
        Some(value) => format!("{help} [default: {value}]"),
        // `None`: no default to show.
        None => help.to_string(),
    }
}

/// The settings a group's flags give (`flags.table()`), the defaults where none is given.
pub fn from_flags<S: DeserializeOwned>(flags: toml::Table) -> S {
    flags
        .try_into()
        .expect("flags are settings of their own types")
}

/// The entries of `table` whose keys are among `keys`, and the rest.
pub fn split_table(table: &toml::Table, keys: &[&str]) -> (toml::Table, toml::Table) {
    table
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| keys.contains(&k.as_str()))
}

/// The type a setting has as a flag: its own, or the one written after `=>` (an optional
/// setting, `Option<PathBuf> => PathBuf`, is a plain flag).
#[doc(hidden)]
#[macro_export]
macro_rules! setting_flag_type {
    ($ty:ty) => {
        $ty
    };
    ($ty:ty, $flag:ty) => {
        $flag
    };
}

/// Declares a group of settings once:
///
/// ```ignore
/// settings! {
///     /// What the group is.
///     pub struct PretrainSettings;
///     /// The group as flags.
///     pub struct PretrainFlags;
///     /// Peak learning rate of AdamW.
///     lr: f64 = 1e-3,
///     /// Start from this checkpoint.
///     init: Option<PathBuf> => PathBuf = None,
/// }
/// ```
///
/// makes `PretrainSettings` (public fields, `Default` from the list, serde with defaults for
/// missing keys and unknown keys refused, `KEYS`) and `PretrainFlags` (`clap::Args`, each an
/// optional `--flag` whose help ends with its default; serialises only the given ones).
#[macro_export]
macro_rules! settings {
    (
        $(#[doc = $settings_doc:literal])+
        pub struct $settings:ident;
        $(#[doc = $flags_doc:literal])+
        pub struct $flags:ident;
        $(
            $(#[doc = $doc:literal])+
            $name:ident : $ty:ty $(=> $flag:ty)? = $default:expr
        ),+ $(,)?
    ) => {
        $(#[doc = $settings_doc])+
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $settings {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for $settings {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        impl $settings {
            /// Every setting's key, as in settings files.
            pub const KEYS: &'static [&'static str] = &[$( stringify!($name) ),+];
        }

        $(#[doc = $flags_doc])+
        #[derive(clap::Args, Debug, Default, Clone, PartialEq, serde::Serialize)]
        pub struct $flags {
            $(
                #[arg(
                    long,
                    help = $crate::settings::help_with_default(
                        concat!($($doc, "\n"),+),
                        &<$settings as Default>::default().$name,
                    )
                )]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$crate::setting_flag_type!($ty $(, $flag)?)>,
            )+
        }

        impl $flags {
            /// The flags given, as a settings file would hold them.
            pub fn table(&self) -> toml::Table {
                $crate::settings::as_table(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::help_with_default;

    #[test]
    fn help_ends_with_the_default_as_a_settings_file_writes_it() {
        assert_eq!(
            help_with_default(" Peak learning\n rate of AdamW.\n", &1e-4_f64),
            "Peak learning rate of AdamW [default: 0.0001]"
        );
        // An f32 as short as it reads back, not its f64 widening (0.17010000348091125).
        assert_eq!(
            help_with_default("Mean.", &0.1701_f32),
            "Mean [default: 0.1701]"
        );
        assert_eq!(
            help_with_default("Model.", &"mini"),
            "Model [default: mini]"
        );
        assert_eq!(
            help_with_default("Augment.", &true),
            "Augment [default: true]"
        );
        assert_eq!(
            help_with_default("Start from.", &None::<String>),
            "Start from"
        );
    }
}
