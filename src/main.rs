//! The `boxoffice` binary: parse the command line, start logging, run the subcommand.

use boxoffice::config::{Cli, Command, Settings};
use boxoffice::startup::{self, Application, StartupError};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    boxoffice::telemetry::init();
    let outcome = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let app = Application::build(Settings::from(args)).await?;
                app.run_until_stopped().await.map_err(StartupError::Serve)
            }
            Command::Migrate(args) => {
                startup::migrate(&args.database_url).await?;
                eprintln!("migrations applied");
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One clear line, no backtrace: these are operator mistakes, not bugs.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
