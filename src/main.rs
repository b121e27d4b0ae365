//! The `boxoffice` binary: parse the command line, start logging, run the subcommand.

use boxoffice::config::{Cli, Command, Settings, VerifyDrawArgs};
use boxoffice::domain::TokenId;
use boxoffice::startup::{self, Application, StartupError};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    boxoffice::telemetry::init();
    let outcome: Result<(), Box<dyn std::error::Error>> =
        actix_web::rt::System::new().block_on(async move {
            match cli.command {
                Command::Serve(args) => {
                    let app = Application::build(Settings::from(args)).await?;
                    Ok(app.run_until_stopped().await.map_err(StartupError::Serve)?)
                }
                Command::Migrate(args) => {
                    startup::migrate(&args.database_url).await?;
                    eprintln!("migrations applied");
                    Ok(())
                }
                Command::VerifyDraw(args) => verify_draw(args).await,
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

/// `verify-draw`: the check's report on stdout; any mismatch is the one `error:` line.
async fn verify_draw(args: VerifyDrawArgs) -> Result<(), Box<dyn std::error::Error>> {
    let token = args.token.map(TokenId::new).transpose()?;
    let verified = boxoffice::http::verify_draw::verify_draw(&args.url, token).await?;
    print!("{}", verified.report());
    Ok(())
}
