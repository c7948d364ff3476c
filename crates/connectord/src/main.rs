//! `connectord` with the connectors this repository ships.

fn main() -> std::process::ExitCode {
    connectord::Daemon::new().run_from_args()
}
