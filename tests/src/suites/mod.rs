//! Checks every daemon must pass, called from each crate's `tests/` with its binary and example;
//! [`daemon_conventions!`](crate::daemon_conventions) turns them into that crate's `#[test]`s.

pub mod config_check;
pub mod lifecycle;
pub mod metrics_endpoint;
pub mod systemd_env;

/// Defines, in the calling test crate, one `#[test]` per convention of docs/ARCHITECTURE.md that every daemon
/// follows: `check` on the example and on bad files, the notify protocol through start, reload,
/// refused reload and stop, metrics that pass `promtool`, the watchdog, journald logging, and
/// `systemd-analyze verify` on the unit. `loopback_config` gets the directory the config will
/// be written to; `in_netns` runs each daemon in a namespace of its own.
#[macro_export]
macro_rules! daemon_conventions {
    (
        bin: $bin:expr,
        example: $example:literal,
        misspell: ($key:literal, $misspelt:literal),
        metrics_prefix: $prefix:literal,
        loopback_config: $loopback:path,
        in_netns: $netns:literal,
        change: $change:path,
        changed_metric: $metric:expr,
        unit: $unit:literal,
        installed_at: $installed:literal $(,)?
    ) => {
        mod daemon_conventions {
            use super::*;
            use $crate::suites::config_check::{self, Checker};
            use $crate::suites::{lifecycle, systemd_env};

            #[test]
            fn example_config_passes_check() {
                config_check::example_passes(Checker::daemon($bin), $example);
            }

            #[test]
            fn misspelt_key_is_refused_with_line_and_column() {
                config_check::misspelt_key_refused(
                    Checker::daemon($bin),
                    $example,
                    $key,
                    $misspelt,
                );
            }

            #[test]
            fn not_toml_empty_and_missing_files_are_refused_clearly() {
                config_check::unreadable_files_refused(Checker::daemon($bin));
            }

            #[test]
            fn run_refuses_a_bad_file_with_exit_78() {
                config_check::run_refuses_bad_file($bin);
            }

            #[test]
            fn notify_metrics_reload_and_stop() {
                lifecycle::run(lifecycle::Lifecycle {
                    bin: $bin,
                    prefix: $prefix,
                    config: &$loopback,
                    in_netns: $netns,
                    change: &$change,
                    changed_metric: $metric,
                });
            }

            fn setup() -> systemd_env::Setup<'static> {
                systemd_env::Setup {
                    bin: $bin,
                    config: &$loopback,
                    in_netns: $netns,
                }
            }

            #[test]
            fn watchdog_is_fed_when_systemd_asks() {
                systemd_env::watchdog_is_fed(&setup());
                systemd_env::watchdog_of_another_process_is_ignored(&setup());
            }

            #[test]
            fn slow_and_flooding_clients_cannot_take_the_metrics_endpoint() {
                $crate::suites::metrics_endpoint::slow_clients_are_bounded(&setup());
            }

            #[test]
            fn logs_have_no_timestamps_under_journald() {
                systemd_env::no_timestamps_under_journald(&setup());
            }

            #[test]
            fn unit_passes_systemd_analyze_verify() {
                let unit = $crate::workspace::root().join("systemd").join($unit);
                let binary = ::std::path::Path::new($bin);
                if let Err(complaint) = $crate::systemd_unit::verify(&unit, &[($installed, binary)])
                {
                    panic!("systemd-analyze verify {}: {complaint}", $unit);
                }
            }
        }
    };
}
