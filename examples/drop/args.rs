//! The generator's command line: what to run against, how big the drop is, closed or open
//! loop, and the presets (`--smoke`) resolved into plain settings.

use clap::Parser;

/// What a buyer does once paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSale {
    Nothing,
    CheckIn,
    Refund,
    Transfer,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "A ticket drop over HTTP, with latency percentiles and invariant checks")]
pub struct Args {
    /// Running servers to hit (needs --admin-key); without it the server starts in-process.
    /// Several nodes: comma-separated, or the flag repeated; users are spread over them round
    /// robin (each user's whole drop goes to one node), setup goes to the first.
    #[arg(long = "base-url", value_delimiter = ',')]
    pub base_urls: Vec<String>,
    /// Start the application in-process on --database-url (the default without --base-url).
    #[arg(long)]
    pub spawn: bool,
    /// The store: where an in-process server writes, and where the invariants are checked.
    /// postgres://…, sqlite://FILE or memory://NAME. Default with --spawn: a throwaway SQLite
    /// file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Virtual users (each does the drop once).
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Seats in the drop, split evenly over --schedules (at most 20,000 per schedule).
    #[arg(long, default_value_t = 5_000)]
    pub seats: usize,
    #[arg(long, default_value_t = 1)]
    pub schedules: usize,
    /// Closed loop: users in flight at once. Open loop: the cap on users in flight.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// No new user starts after this long.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Open loop: users arriving per second, whether or not earlier ones finished.
    #[arg(long)]
    pub open_loop_rate: Option<f64>,
    /// X-Admin-Key of the server (an in-process server gets one of its own).
    #[arg(long, env = "BOXOFFICE_ADMIN_KEY")]
    pub admin_key: Option<String>,
    /// Each user reserves 1 to this many seats.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4))]
    pub seats_per_user: u64,
    /// Reservation attempts per user (each after re-reading the seat map).
    #[arg(long, default_value_t = 5)]
    pub max_attempts: usize,
    /// Pause between status polls of a WAITING token.
    #[arg(long, default_value_t = 50)]
    pub poll_interval_ms: u64,
    /// HTTP workers of an in-process server.
    #[arg(long, default_value_t = 2)]
    pub server_workers: usize,
    /// Threads of the load generator's own runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Zero bits of the join's proof of work, for an in-process server (0: none asked). Every
    /// user fetches a challenge and solves it whenever the server asks one, in-process or not.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=28))]
    pub join_pow_bits: u8,
    /// ACTIVE tokens at once, for an in-process server (users that sold out keep theirs).
    #[arg(long, default_value_t = 100_000)]
    pub max_active: u64,
    /// CI preset: 1,000 users, 1,000 seats on 2 schedules, 32 clients, at most 20 s, in-process
    /// on a throwaway SQLite file unless --database-url says otherwise.
    #[arg(long)]
    pub smoke: bool,
    /// A user who finds the drop sold out joins the first schedule's waiting list for one
    /// seat (on with --smoke); the invariants then count the stored entries.
    #[arg(long)]
    pub waitlist: bool,
    /// Check the seat-map scanner against a full JSON parse of every map (on with --smoke).
    #[arg(long)]
    pub verify_seat_maps: bool,
    /// Print a line a second: users completed in that second, users in flight, the slowest
    /// iteration completed in it.
    #[arg(long)]
    pub progress: bool,
    /// Keep the throwaway SQLite file.
    #[arg(long)]
    pub keep: bool,
    /// Retry a 503 or a connection error up to N times, after a short backoff (the answer's
    /// `Retry-After` if any, at most 1 s), with the same `Idempotency-Key` every measured POST
    /// carries in this mode (a hold or a payment replays its first answer under it). A
    /// request that may have reached the server is retried only if a repeat is harmless (see
    /// `session::replayable`). Without the flag: a 503 is retried 3
    /// times after 20 ms, nothing else is retried, and no key is sent (the runs measured
    /// before it).
    #[arg(long = "retry-503", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retry_503: Option<u32>,
    /// After a payment, this percentage of buyers check their first ticket in at the door
    /// (`POST /v1/checkins` with the door key). The three after-sale percentages go to
    /// disjoint buyers (picked by the order users start in) and add up to at most 100; every
    /// after-sale step first reads the buyer's tickets. 0 (the default) for all three: the
    /// plain drop.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub checkin_percent: u8,
    /// After a payment, this percentage of buyers ask for a refund (`POST
    /// /v1/reservations/{id}/refund` with an `Idempotency-Key`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub refund_percent: u8,
    /// After a payment, this percentage of buyers hand their first ticket to a user created
    /// for it at setup (`POST /v1/tickets/{id}/transfer`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub transfer_percent: u8,
    /// `X-Door-Key` for the check-ins (the door also takes the admin key, the default).
    #[arg(long, env = "BOXOFFICE_DOOR_KEY")]
    pub door_key: Option<String>,
    /// Exit 0 even if a request was answered 5xx (a run with faults injected on purpose).
    /// Without it any 5xx, and any 2xx body the generator cannot read (a seat map the scanner
    /// and the parser disagree on), fails the run with exit code 1.
    #[arg(long)]
    pub tolerate_5xx: bool,
}

impl Args {
    /// The presets and bounds applied: `--smoke`, the in-process server without `--base-url`
    /// (blank entries of the list dropped), 1 to 100 schedules, at least one user in flight.
    pub fn resolved(mut self) -> Args {
        if self.smoke {
            // More demand (about 1,500 seats) than seats: the sold-out path runs too.
            self.users = 1_000;
            self.seats = 1_000;
            self.schedules = 2;
            self.concurrency = 32;
            self.duration_secs = 20;
            self.verify_seat_maps = true;
            self.waitlist = true;
            if self.after_sale_percent() == 0 {
                // A little of each step after the sale.
                (
                    self.checkin_percent,
                    self.refund_percent,
                    self.transfer_percent,
                ) = (10, 5, 5);
            }
        }
        self.base_urls = self
            .base_urls
            .iter()
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty())
            .collect();
        if self.base_urls.is_empty() {
            self.spawn = true;
        }
        self.schedules = self.schedules.clamp(1, 100);
        self.concurrency = self.concurrency.max(1);
        self
    }

    /// Buyers who do something after the sale, in percent (at most 100: see [`Args::check`]).
    pub fn after_sale_percent(&self) -> u32 {
        u32::from(self.checkin_percent)
            + u32::from(self.refund_percent)
            + u32::from(self.transfer_percent)
    }

    /// What the parser cannot say: the after-sale percentages share the buyers.
    pub fn check(&self) -> Result<(), String> {
        let sum = self.after_sale_percent();
        if sum > 100 {
            return Err(format!(
                "--checkin-percent, --refund-percent and --transfer-percent add up to {sum} (at most 100)"
            ));
        }
        Ok(())
    }

    /// What the `index`th user to start does after paying: the buyers are spread over
    /// `0..100` by their index, check-ins first, then refunds, then transfers.
    pub fn after_sale(&self, index: usize) -> AfterSale {
        let slot = (index % 100) as u32;
        let checkin = u32::from(self.checkin_percent);
        let refund = checkin + u32::from(self.refund_percent);
        let transfer = refund + u32::from(self.transfer_percent);
        if slot < checkin {
            AfterSale::CheckIn
        } else if slot < refund {
            AfterSale::Refund
        } else if slot < transfer {
            AfterSale::Transfer
        } else {
            AfterSale::Nothing
        }
    }

    /// Which transfer the `index`th user's is (0 for the first user whose slot transfers):
    /// its recipient's place in the list [`Args::transfer_recipients`] sized.
    pub fn transfer_ordinal(&self, index: usize) -> usize {
        let before = usize::from(self.checkin_percent) + usize::from(self.refund_percent);
        (index / 100) * usize::from(self.transfer_percent) + (index % 100).saturating_sub(before)
    }

    /// Users the transfers need, one per transferring buyer: as many as there are indices
    /// in `0..users` whose slot falls in the transfers' range.
    pub fn transfer_recipients(&self) -> usize {
        (0..self.users)
            .filter(|&i| self.after_sale(i) == AfterSale::Transfer)
            .count()
    }

    /// Seats in each schedule: --seats split evenly, at least 1 and at most 20,000 (the most
    /// a schedule takes).
    pub fn seats_per_schedule(&self) -> usize {
        self.seats.div_ceil(self.schedules).clamp(1, 20_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(flags: &[&str]) -> Args {
        let command_line = std::iter::once("drop").chain(flags.iter().copied());
        Args::try_parse_from(command_line)
            .expect("the test passes valid flags")
            .resolved()
    }

    #[test]
    fn smoke_wins_over_the_sizes_given_with_it_and_spawns_a_server() {
        let args = parsed(&["--smoke", "--users", "5", "--concurrency", "900"]);
        assert_eq!((args.users, args.seats, args.schedules), (1_000, 1_000, 2));
        assert_eq!(args.concurrency, 32);
        assert!(args.verify_seat_maps && args.spawn);
    }

    #[test]
    fn a_base_url_means_no_in_process_server_and_the_bounds_apply() {
        let args = parsed(&[
            "--base-url",
            "http://x",
            "--schedules",
            "0",
            "--concurrency",
            "0",
        ]);
        assert!(!args.spawn);
        assert_eq!((args.schedules, args.concurrency), (1, 1));
        assert_eq!(parsed(&["--schedules", "1000"]).schedules, 100);
    }

    #[test]
    fn seats_are_split_over_the_schedules_within_what_a_schedule_takes() {
        assert_eq!(
            parsed(&["--seats", "5000", "--schedules", "3"]).seats_per_schedule(),
            1_667
        );
        assert_eq!(parsed(&["--seats", "90000"]).seats_per_schedule(), 20_000);
        assert_eq!(parsed(&["--seats", "0"]).seats_per_schedule(), 1);
    }

    #[test]
    fn base_urls_come_comma_separated_or_repeated_in_order_without_blanks() {
        let args = parsed(&[
            "--base-url",
            "http://a:1/, http://b:2",
            "--base-url",
            "http://c:3,",
        ]);
        assert_eq!(args.base_urls, ["http://a:1", "http://b:2", "http://c:3"]);
        assert!(!args.spawn);
        let one = parsed(&["--base-url", "http://127.0.0.1:8080/"]);
        assert_eq!(one.base_urls, ["http://127.0.0.1:8080"]);
        let blank = parsed(&["--base-url", " , "]);
        assert!(
            blank.base_urls.is_empty() && blank.spawn,
            "nothing to hit: in-process"
        );
        assert!(parsed(&[]).base_urls.is_empty());
    }

    #[test]
    fn retry_503_is_optional_and_bounded() {
        assert_eq!(
            parsed(&[]).retry_503,
            None,
            "the measured runs' policy by default"
        );
        assert_eq!(parsed(&["--retry-503", "0"]).retry_503, Some(0));
        assert_eq!(parsed(&["--retry-503", "20"]).retry_503, Some(20));
        for bad in ["21", "-1", "x"] {
            assert!(
                Args::try_parse_from(["drop", "--retry-503", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn after_sale_percentages_default_to_nothing_and_share_the_buyers() {
        let plain = parsed(&[]);
        assert_eq!(plain.after_sale_percent(), 0);
        assert!((0..1000).all(|i| plain.after_sale(i) == AfterSale::Nothing));
        assert_eq!(plain.transfer_recipients(), 0);
        let mixed = parsed(&[
            "--users",
            "1050",
            "--checkin-percent",
            "20",
            "--refund-percent",
            "10",
            "--transfer-percent",
            "10",
        ]);
        assert!(mixed.check().is_ok());
        let count = |what| (0..1000).filter(|&i| mixed.after_sale(i) == what).count();
        assert_eq!(
            [
                AfterSale::CheckIn,
                AfterSale::Refund,
                AfterSale::Transfer,
                AfterSale::Nothing
            ]
            .map(count),
            [200, 100, 100, 600]
        );
        // 1,050 users: indices 1,030 to 1,039 transfer too.
        assert_eq!(mixed.transfer_recipients(), 110);
        let ordinals: Vec<usize> = (0..1050)
            .filter(|&i| mixed.after_sale(i) == AfterSale::Transfer)
            .map(|i| mixed.transfer_ordinal(i))
            .collect();
        assert_eq!(ordinals, (0..110).collect::<Vec<_>>(), "one recipient each");
        let smoke = parsed(&["--smoke"]);
        assert!(smoke.after_sale_percent() > 0 && smoke.transfer_recipients() > 0);
        let over = parsed(&["--checkin-percent", "60", "--refund-percent", "41"]);
        assert!(over.check().is_err());
        assert!(Args::try_parse_from(["drop", "--refund-percent", "101"]).is_err());
    }

    #[test]
    fn seats_per_user_is_one_to_four() {
        let with = |n: &str| Args::try_parse_from(["drop", "--seats-per-user", n]);
        assert!(with("0").is_err() && with("5").is_err());
        assert_eq!(with("4").map(|args| args.seats_per_user).ok(), Some(4));
    }
}
