// SPDX-License-Identifier: MPL-2.0
//! Command lines read with clap, for every tool the same way: `--help` and
//! `--version` print and exit 0; a usage mistake is one line naming it and
//! a pointer to `--help`, with exit status 2.

use clap::error::ErrorKind;

/// A usage mistake, in the tool's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Usage {
    fn from(s: String) -> Usage {
        Usage(s)
    }
}

impl From<&str> for Usage {
    fn from(s: &str) -> Usage {
        Usage(s.into())
    }
}

/// What reading a command line came to.
pub enum Read<T> {
    Args(T),
    /// --help or --version: the text to print.
    Said(String),
}

/// Reads `args` (without the program name) as `T`.
pub fn read<T: clap::Parser>(
    program: &str,
    args: impl IntoIterator<Item = String>,
) -> Result<Read<T>, Usage> {
    match T::try_parse_from(std::iter::once(program.to_string()).chain(args)) {
        Ok(t) => Ok(Read::Args(t)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(Read::Said(e.to_string()))
        }
        Err(e) => Err(Usage(first_line(&e.to_string()))),
    }
}

/// clap's message as one line: without its "error: ", its lines up to
/// the first blank one joined (a list of missing arguments), and not the
/// usage and tip that follow.
fn first_line(text: &str) -> String {
    let head: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = head.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// Says `mistake` as a usage error of `program` (as `kvs-record serve`) and
/// exits with status 2.
pub fn usage_exit(program: &str, mistake: &Usage) -> ! {
    eprintln!("{program}: {mistake}\nTry '{program} --help'.");
    std::process::exit(2)
}

/// The arguments as `T`, or the end of the process: help and version
/// printed with status 0, a usage mistake said with status 2.
pub fn args_or_exit<T: clap::Parser>(program: &str, args: impl IntoIterator<Item = String>) -> T {
    match read::<T>(program, args) {
        Ok(Read::Args(t)) => t,
        Ok(Read::Said(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(mistake) => usage_exit(program, &mistake),
    }
}

/// The shells `--generate` writes completions for.
const SHELLS: &[(&str, clap_complete::Shell)] = &[
    ("bash", clap_complete::Shell::Bash),
    ("zsh", clap_complete::Shell::Zsh),
    ("fish", clap_complete::Shell::Fish),
];

/// `--generate man` and `--generate bash|zsh|fish`, for packagers (meson
/// installs them; not in --help): the man page or the shell's completions,
/// made from `T`'s parser, on stdout. False when `args` ask for neither.
pub fn generate<T: clap::CommandFactory>(args: &[String]) -> bool {
    let [flag, kind] = args else {
        return false;
    };
    if flag != "--generate" {
        return false;
    }
    let mut cmd = T::command();
    let name = cmd.get_name().to_string();
    // Made whole, then written: a closed stdout is an error, not a panic.
    let mut text = Vec::new();
    match kind.as_str() {
        "man" => clap_mangen::Man::new(cmd)
            .render(&mut text)
            .expect("a man page in memory"),
        shell => match SHELLS.iter().find(|(n, _)| *n == shell) {
            Some((_, shell)) => clap_complete::generate(*shell, &mut cmd, &name, &mut text),
            None => usage_exit(
                &name,
                &Usage(format!(
                    "--generate takes man, bash, zsh or fish, not {kind}"
                )),
            ),
        },
    }
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(&text) {
        eprintln!("{name}: cannot write to stdout: {e}");
        std::process::exit(1);
    }
    true
}
