//! The tracker's configuration: one struct with documented defaults, printed by
//! `st udp-tracker --print-config` in the same `key = value` format `--config FILE` reads.

use std::fmt;
use std::time::Duration;

/// Tracker settings (spec `tracker.md` §5–§6).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Most peers returned in one reply (also capped so a reply fits 1200 bytes).
    pub max_numwant: u16,
    /// Seconds between connection-id key rotations.
    pub key_rotation_secs: u64,
    /// Seconds between expiry passes over the tables.
    pub housekeeping_secs: u32,
    /// Seconds between stats lines in the log (and writes of the stats file).
    pub stats_interval_secs: u32,
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
        }
    }
}

/// A problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A line is not `key = value`.
    #[error("line {0}: expected `key = value`")]
    Syntax(usize),
    /// The key is not a setting.
    #[error("line {0}: unknown setting `{1}`")]
    UnknownKey(usize, String),
    /// The value does not parse or is out of range.
    #[error("line {0}: bad value for `{1}`")]
    BadValue(usize, String),
}

impl Config {
    /// How often housekeeping runs.
    pub fn housekeeping_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.housekeeping_secs.max(1)))
    }

    /// Reads `key = value` lines (`#` starts a comment) over the defaults.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(ConfigError::Syntax(line_no))?;
            let (k, v) = (k.trim(), v.trim());
            let bad = || ConfigError::BadValue(line_no, k.to_owned());
            fn num<T: std::str::FromStr>(v: &str) -> Option<T> {
                v.replace('_', "").parse().ok()
            }
            match k {
                "interval_secs" => c.interval_secs = num(v).filter(|&x| x > 0).ok_or_else(bad)?,
                "peer_timeout_secs" => {
                    c.peer_timeout_secs = num(v).filter(|&x| x > 0).ok_or_else(bad)?
                }
                "max_swarms" => c.max_swarms = num(v).ok_or_else(bad)?,
                "max_peers" => c.max_peers = num(v).ok_or_else(bad)?,
                "max_peers_per_swarm" => c.max_peers_per_swarm = num(v).ok_or_else(bad)?,
                "default_numwant" => c.default_numwant = num(v).ok_or_else(bad)?,
                "max_numwant" => c.max_numwant = num(v).ok_or_else(bad)?,
                "key_rotation_secs" => {
                    c.key_rotation_secs = num(v).filter(|&x| x > 0).ok_or_else(bad)?
                }
                "housekeeping_secs" => {
                    c.housekeeping_secs = num(v).filter(|&x| x > 0).ok_or_else(bad)?
                }
                "stats_interval_secs" => {
                    c.stats_interval_secs = num(v).filter(|&x| x > 0).ok_or_else(bad)?
                }
                _ => return Err(ConfigError::UnknownKey(line_no, k.to_owned())),
            }
        }
        Ok(c)
    }
}

impl fmt::Display for Config {
    /// The configuration as a file `Config::parse` reads back, one documented key a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String, &str); 10] = [
            (
                "interval_secs",
                self.interval_secs.to_string(),
                "seconds between a peer's announces",
            ),
            (
                "peer_timeout_secs",
                self.peer_timeout_secs.to_string(),
                "a silent peer is forgotten after this",
            ),
            (
                "max_swarms",
                self.max_swarms.to_string(),
                "new swarms past this get empty answers",
            ),
            (
                "max_peers",
                self.max_peers.to_string(),
                "all swarms; past it a new peer evicts a stale one",
            ),
            (
                "max_peers_per_swarm",
                self.max_peers_per_swarm.to_string(),
                "per swarm and address family; same rule",
            ),
            (
                "default_numwant",
                self.default_numwant.to_string(),
                "peers for a BEP 15 numwant of -1",
            ),
            (
                "max_numwant",
                self.max_numwant.to_string(),
                "most peers per reply (and what fits 1200 bytes)",
            ),
            (
                "key_rotation_secs",
                self.key_rotation_secs.to_string(),
                "connection-id key lifetime",
            ),
            (
                "housekeeping_secs",
                self.housekeeping_secs.to_string(),
                "seconds between expiry passes",
            ),
            (
                "stats_interval_secs",
                self.stats_interval_secs.to_string(),
                "seconds between stats lines",
            ),
        ];
        writeln!(
            f,
            "# st udp-tracker configuration (defaults shown); `key = value`, # comments"
        )?;
        for (k, v, doc) in rows {
            writeln!(f, "{k} = {v}  # {doc}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_reads_back() {
        let c = Config {
            max_peers: 12,
            interval_secs: 7,
            ..Config::default()
        };
        assert_eq!(Config::parse(&c.to_string()), Ok(c));
    }

    #[test]
    fn config_errors_name_the_line() {
        assert_eq!(Config::parse("\n# x\nnope"), Err(ConfigError::Syntax(3)));
        assert_eq!(
            Config::parse("frobs = 1"),
            Err(ConfigError::UnknownKey(1, "frobs".into()))
        );
        assert_eq!(
            Config::parse("interval_secs = 0"),
            Err(ConfigError::BadValue(1, "interval_secs".into()))
        );
        assert_eq!(
            Config::parse("max_numwant = 70000"),
            Err(ConfigError::BadValue(1, "max_numwant".into()))
        );
        assert_eq!(Config::parse("max_peers = 1_000").unwrap().max_peers, 1000);
    }
}
