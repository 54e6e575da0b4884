//! The command's failure type: a one-line message and the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

/// A failure of a command, with the exit code of `PRODUCT.md`'s contract.
#[derive(Debug)]
pub enum CliError {
    /// Usage error or invalid input (missing, unreadable or malformed input file): exit 2.
    Invalid(anyhow::Error),
    /// Runtime failure (verification failed, IO error while working): exit 1.
    Runtime(anyhow::Error),
    /// Stopped by a signal before the work was done (state saved): exit with this code, 130
    /// after SIGINT and 143 after SIGTERM, and no error line.
    Interrupted(u8),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Invalid(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::from(1),
            CliError::Interrupted(code) => ExitCode::from(*code),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self {
            CliError::Invalid(e) | CliError::Runtime(e) => e,
            CliError::Interrupted(_) => return f.write_str("interrupted"),
        };
        // `{:#}` joins the context chain on one line: "cannot read x.st: No such file …".
        let text = format!("{e:#}");
        // An error is one line, whatever a cause's text holds.
        f.write_str(&text.replace(['\n', '\r'], " "))
    }
}

/// Shorthand constructors.
pub fn invalid(msg: impl fmt::Display) -> CliError {
    CliError::Invalid(anyhow::anyhow!("{msg}"))
}

/// A runtime failure with a message.
pub fn runtime(msg: impl fmt::Display) -> CliError {
    CliError::Runtime(anyhow::anyhow!("{msg}"))
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;
