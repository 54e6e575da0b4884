//! The tracker's configuration: one struct with documented defaults, read from TOML
//! (`st udp-tracker --config FILE`) and printed as commented TOML that reads back identically
//! (`--print-config`). Parsing takes a string: the caller reads the file.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Tracker settings (spec `tracker.md` §2.1, §5–§7). Every field may be left out of a file;
/// its default is then used. Unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Seconds a peer should wait between announces (told in every announce reply).
    pub interval_secs: u32,
    /// Seconds after its last announce when a peer is forgotten (default: twice the interval).
    pub peer_timeout_secs: u32,
    /// Most swarms kept; announces for new swarms past this are answered with no peers.
    pub max_swarms: usize,
    /// Most peers kept over all swarms; past this a new peer evicts a stale one of its swarm.
    pub max_peers: usize,
    /// Most peers kept per swarm and address family; same eviction rule.
    pub max_peers_per_swarm: usize,
    /// Peers returned when a BEP 15 client asks for the default (-1).
    pub default_numwant: u16,
    /// Most peers returned in one reply (also capped so a reply fits 1200 bytes and, in the
    /// native protocol, 3× the request).
    pub max_numwant: u16,
    /// Seconds between connection-id key rotations.
    pub key_rotation_secs: u32,
    /// Seconds between expiry passes over the tables.
    pub housekeeping_secs: u32,
    /// Seconds between stats lines in the log (and writes of the stats file).
    pub stats_interval_secs: u32,
    /// Bad connection ids from one IP address, within `offender_window_secs`, that get it
    /// ignored (spec §2.1).
    pub offender_threshold: u32,
    /// Seconds over which an address's bad connection ids are counted.
    pub offender_window_secs: u32,
    /// Seconds an offending address is ignored.
    pub offender_ignore_secs: u32,
    /// Most addresses the offender table holds (the oldest is evicted); 0 turns it off.
    pub offender_table_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_secs: 300,
            peer_timeout_secs: 600,
            max_swarms: 100_000,
            max_peers: 1_000_000,
            max_peers_per_swarm: 100_000,
            default_numwant: 50,
            max_numwant: 200,
            key_rotation_secs: 3600,
            housekeeping_secs: 15,
            stats_interval_secs: 60,
            offender_threshold: 20,
            offender_window_secs: 60,
            offender_ignore_secs: 300,
            offender_table_size: 4096,
        }
    }
}

/// A problem in a configuration file, shown as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The setting at fault, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match &self.key {
            Some(k) => write!(f, "bad value for `{k}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// (key, meaning) of every setting, in the order `--print-config` shows them.
const DOCS: [(&str, &str); 14] = [
    (
        "interval_secs",
        "Seconds a peer waits between announces (told in every reply).",
    ),
    (
        "peer_timeout_secs",
        "Seconds after its last announce when a silent peer is forgotten.",
    ),
    (
        "max_swarms",
        "Most swarms kept; announces for new swarms past this get empty answers.",
    ),
    (
        "max_peers",
        "Most peers over all swarms; past it a new peer evicts a stale one of its swarm.",
    ),
    (
        "max_peers_per_swarm",
        "Most peers per swarm and address family; same eviction rule.",
    ),
    ("default_numwant", "Peers for a BEP 15 num_want of -1."),
    (
        "max_numwant",
        "Most peers per reply (also what fits 1200 bytes, and 3x a native request).",
    ),
    (
        "key_rotation_secs",
        "Seconds between connection-id key rotations.",
    ),
    (
        "housekeeping_secs",
        "Seconds between expiry passes over the tables.",
    ),
    (
        "stats_interval_secs",
        "Seconds between stats lines (and writes of --stats-file).",
    ),
    (
        "offender_threshold",
        "Bad connection ids from one IP address, within the window, that get it ignored.",
    ),
    (
        "offender_window_secs",
        "Seconds over which an address's bad connection ids are counted.",
    ),
    (
        "offender_ignore_secs",
        "Seconds an offending address is ignored.",
    ),
    (
        "offender_table_size",
        "Most addresses in the offender table (oldest evicted); 0 turns it off.",
    ),
];

impl Config {
    /// How often housekeeping runs.
    pub fn housekeeping_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.housekeeping_secs.max(1)))
    }

    /// Reads a TOML document over the defaults and checks every value.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        c.validate().map_err(|(key, message)| ConfigError {
            line: line_of_key(text, key),
            key: Some(key.to_owned()),
            message: message.to_owned(),
        })?;
        Ok(c)
    }

    /// Checks the values serde cannot: `Err((key, why))` for the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let positive: [(&'static str, u64); 12] = [
            ("interval_secs", self.interval_secs.into()),
            ("peer_timeout_secs", self.peer_timeout_secs.into()),
            ("max_swarms", self.max_swarms as u64),
            ("max_peers", self.max_peers as u64),
            ("max_peers_per_swarm", self.max_peers_per_swarm as u64),
            ("max_numwant", self.max_numwant.into()),
            ("key_rotation_secs", self.key_rotation_secs.into()),
            ("housekeeping_secs", self.housekeeping_secs.into()),
            ("stats_interval_secs", self.stats_interval_secs.into()),
            ("offender_threshold", self.offender_threshold.into()),
            ("offender_window_secs", self.offender_window_secs.into()),
            ("offender_ignore_secs", self.offender_ignore_secs.into()),
        ];
        if let Some((k, _)) = positive.into_iter().find(|&(_, v)| v == 0) {
            return Err((k, "must be at least 1"));
        }
        if self.key_rotation_secs < 60 {
            // Spec §2: an id must live at least a minute (clients use one for 50 s).
            return Err(("key_rotation_secs", "must be at least 60"));
        }
        Ok(())
    }

    fn values(&self) -> [String; 14] {
        [
            self.interval_secs.to_string(),
            self.peer_timeout_secs.to_string(),
            self.max_swarms.to_string(),
            self.max_peers.to_string(),
            self.max_peers_per_swarm.to_string(),
            self.default_numwant.to_string(),
            self.max_numwant.to_string(),
            self.key_rotation_secs.to_string(),
            self.housekeeping_secs.to_string(),
            self.stats_interval_secs.to_string(),
            self.offender_threshold.to_string(),
            self.offender_window_secs.to_string(),
            self.offender_ignore_secs.to_string(),
            self.offender_table_size.to_string(),
        ]
    }
}

impl fmt::Display for Config {
    /// The configuration as commented TOML that [`Config::parse`] reads back identically.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = Config::default().values();
        writeln!(
            f,
            "# st udp-tracker configuration (TOML; spec/tracker.md). Any setting may be left\n\
             # out: its default is used. Unknown settings are errors."
        )?;
        for (((k, doc), v), d) in DOCS.iter().zip(self.values()).zip(defaults) {
            writeln!(f, "\n# {doc} Default: {d}.\n{k} = {v}")?;
        }
        Ok(())
    }
}

/// One line from a TOML or serde error: the line number from its span, the key from that
/// line's text (or from serde's "unknown field" message).
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return ConfigError {
            line: line.or_else(|| line_of_key(text, name)),
            key: None,
            message: format!("unknown setting `{name}`"),
        };
    }
    let key = line
        .and_then(|l| text.lines().nth(l - 1))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(str::to_owned);
    ConfigError { line, key, message }
}

/// The first line that sets `key`.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_reads_back() {
        let c = Config {
            interval_secs: 7,
            peer_timeout_secs: 8,
            max_swarms: 9,
            max_peers: 12,
            max_peers_per_swarm: 10,
            default_numwant: 11,
            max_numwant: 13,
            key_rotation_secs: 64,
            housekeeping_secs: 15,
            stats_interval_secs: 16,
            offender_threshold: 17,
            offender_window_secs: 18,
            offender_ignore_secs: 19,
            offender_table_size: 0,
        };
        assert_eq!(Config::parse(&c.to_string()), Ok(c));
        assert_eq!(
            Config::parse(&Config::default().to_string()),
            Ok(Config::default())
        );
        assert_eq!(Config::parse(""), Ok(Config::default()));
    }

    #[test]
    fn config_errors_are_one_line_naming_the_key() {
        let one_line = |text: &str| {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            e
        };
        assert_eq!(
            one_line("\n# x\nfrobs = 1"),
            "line 3: unknown setting `frobs`"
        );
        assert_eq!(
            one_line("interval_secs = 0"),
            "line 1: bad value for `interval_secs`: must be at least 1"
        );
        assert_eq!(
            one_line("interval_secs = 30\n\nmax_numwant = 0\n"),
            "line 3: bad value for `max_numwant`: must be at least 1"
        );
        assert!(one_line("max_numwant = 70000").starts_with("line 1: bad value for `max_numwant`"));
        assert!(
            one_line("interval_secs = soon").starts_with("line 1: bad value for `interval_secs`")
        );
        assert!(
            one_line("interval_secs = \"300\"")
                .starts_with("line 1: bad value for `interval_secs`")
        );
        assert!(one_line("nope").starts_with("line 1: "));
        assert_eq!(Config::parse("max_peers = 1_000").unwrap().max_peers, 1000);
    }
}
