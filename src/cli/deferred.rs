//! Subcommand arguments that clap builds only when they are needed.
//!
//! clap's derive builds the whole command tree before it parses: every
//! subcommand with every argument, its help text, value parser and
//! default. cellvm has some thirty subcommands, and `cellvm run` is the
//! start of every cell: in the nested rig that build was 26-31 ms of the
//! ~150 ms between `main()` and the guest's first instruction, nearly all
//! of it code that runs once (docs/benchmarks.md, "Where cellvm's start
//! goes").
//!
//! A subcommand whose arguments are wrapped in [`Deferred`] gets them
//! through [`clap::Command::defer`]: the subcommand's name and help line
//! are in the tree from the start (so `cellvm help` lists it and a
//! misspelt name gets its suggestion), its arguments are added when clap
//! parses that subcommand or renders its help. The parsed value is the
//! same as without the wrapper.

use clap::builder::Resettable;
use clap::{ArgMatches, Args, Command, FromArgMatches};

/// `T`'s arguments, added to their subcommand only when it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Deferred)
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Deferred)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

impl<T: Args> Args for Deferred<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }

    fn augment_args(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_help(cmd, T::augment_args))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_help(cmd, T::augment_args_for_update))
    }
}

/// Adds the arguments with `augment`, keeping the subcommand's help lines:
/// the derive sets them from the variant's doc comment before the deferred
/// arguments arrive, and an argument struct's own doc comment must not
/// replace them.
fn keep_help(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd.about(Resettable::Reset),
    };
    match long_about {
        Some(long) => cmd.long_about(long),
        None => cmd.long_about(Resettable::Reset),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{AttachArgs, Cli, Command, Deferred, DetachArgs, GuestTimeout};
    use clap::{CommandFactory, Parser};

    #[test]
    fn other_subcommands_have_no_arguments_until_they_are_parsed() {
        let cli = Cli::command();
        let attach = cli
            .find_subcommand("attach")
            .expect("the attach subcommand is listed");
        assert_eq!(attach.get_arguments().count(), 0);
        let run = cli.find_subcommand("run").expect("run is listed");
        assert!(run.get_arguments().any(|a| a.get_id() == "kernel"));
    }

    #[test]
    fn a_deferred_subcommand_parses_as_its_arguments_say() {
        let cli = Cli::try_parse_from(["cellvm", "attach", "c1", "dev.toml", "--timeout", "7"])
            .expect("parses");
        match cli.command {
            Command::Attach(Deferred(AttachArgs {
                cell,
                device,
                wait: GuestTimeout { timeout },
            })) => {
                assert_eq!(cell, "c1");
                assert_eq!(device, std::path::PathBuf::from("dev.toml"));
                assert_eq!(timeout, 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_and_defaults_reach_a_deferred_subcommand() {
        let cli = Cli::try_parse_from(["cellvm", "detach", "-v", "c1", "x"]).expect("parses");
        assert!(cli.verbose);
        match cli.command {
            Command::Detach(Deferred(DetachArgs {
                wait: GuestTimeout { timeout },
                force,
                ..
            })) => {
                assert_eq!(timeout, 10);
                assert!(!force);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deferred_subcommand_keeps_the_help_line_of_its_variant() {
        let mut cli = Cli::command();
        cli.build();
        let enable = cli.find_subcommand("enable").expect("enable is listed");
        let about = enable
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        assert!(
            about.starts_with("Enable a reserved or disabled device"),
            "{about}"
        );
        assert!(enable.get_arguments().any(|a| a.get_id() == "timeout"));
    }

    #[test]
    fn unknown_arguments_of_a_deferred_subcommand_are_refused() {
        let err = Cli::try_parse_from(["cellvm", "pause", "c1", "--bogus"]).expect_err("refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn the_command_tree_passes_clap_s_own_checks() {
        Cli::command().debug_assert();
    }
}
