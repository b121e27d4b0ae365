//! The markers' numbering and what leaves a commit's outcome unknown; then, on a real
//! PostgreSQL behind a proxy that cuts connections, a commit whose answer is lost.

use super::*;

#[test]
fn markers_count_up_from_a_random_base_and_one_in_many_trims() {
    let (a, b) = (Markers::new(), Markers::new());
    let first = a.next();
    assert_ne!(first.id, b.next().id, "two processes start apart");
    let second = a.next();
    assert_eq!(second.id, first.id + 1);
    assert!(first.trim_before.is_none() && second.trim_before.is_none());
    let trims: Vec<BatchMarker> = (2..2 * TRIM_EVERY)
        .map(|_| a.next())
        .filter(|m| m.trim_before.is_some())
        .collect();
    assert_eq!(trims.len(), 2, "one batch in {TRIM_EVERY}");
    for m in trims {
        let before = m.trim_before.expect("filtered above");
        assert_eq!(before.millis(), m.at.millis() - KEPT_FOR.as_millis() as i64);
    }
}

#[test]
fn only_a_lost_connection_leaves_the_outcome_unknown() {
    assert!(outcome_unknown(&StoreError::Database(sqlx::Error::Io(
        std::io::Error::from(std::io::ErrorKind::ConnectionReset)
    ))));
    assert!(outcome_unknown(&StoreError::Database(
        sqlx::Error::WorkerCrashed
    )));
    assert!(!outcome_unknown(&StoreError::Corrupt("refused".into())));
    assert!(!outcome_unknown(&StoreError::InjectedFailure));
    assert!(!outcome_unknown(&StoreError::Fenced(Vec::new())));
}

/// A commit cut off on a real PostgreSQL (see `pg_rig`).
mod on_postgres {
    use super::super::super::pg_rig::{PgRig, Proxy};
    use super::super::super::rig::*;
    use super::super::super::*;
    use crate::domain::schedule::ReservationStatus;

    /// How the test ends batch N after cutting its connection during its COMMIT.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum AfterTheCut {
        /// The gate opens: N commits, though nobody hears it.
        Commits,
        /// N's backend is terminated: N never commits.
        Terminated,
    }

    /// N's connection is cut while its COMMIT waits at the gate: the persister cannot know
    /// whether N committed. It asks N's marker, and the question waits for N's transaction
    /// (seen waiting on it) until N ends one way or the other. Committed, N is acknowledged
    /// once and stored once; not committed, it is refused, its actor rebuilt, nothing stored,
    /// and the persister goes on.
    async fn a_commit_cut_off(after: AfterTheCut) {
        let proxy = Proxy::start().await;
        let mut pg = PgRig::start_via(Some(&proxy)).await;
        pg.sql("SELECT pg_advisory_lock(7, 2)").await;
        let n = pg.reservation(2, 2, ReservationStatus::Pending);
        pg.submit(
            &[(schedule(1), 0)],
            Writes::default().created_reservation(&n),
        );
        let committing =
            "wait_event = 'advisory' AND query NOT LIKE '%batch_markers (id, at_ms) VALUES%'";
        pg.until_backend("N waiting at its commit", committing)
            .await;
        proxy.cut();
        pg.until_backend(
            "the question waiting for N's transaction",
            "wait_event_type = 'Lock' AND query LIKE '%batch_markers (id, at_ms) VALUES%'",
        )
        .await;
        assert!(pg.rig.outcomes.try_recv().is_err(), "nothing answered yet");
        match after {
            AfterTheCut::Commits => pg.sql("SELECT pg_advisory_unlock(7, 2)").await,
            AfterTheCut::Terminated => {
                pg.sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND {committing}"
                ))
                .await
            }
        }
        match after {
            AfterTheCut::Commits => {
                assert_eq!(pg.rig.answers(1).await, vec![Ok(())]);
                assert!(pg.rig.rebuilds.try_recv().is_err(), "nothing to rebuild");
            }
            AfterTheCut::Terminated => {
                assert_eq!(
                    pg.rig.answers(1).await,
                    vec![Err(Unavailable::CommitFailed)]
                );
                assert!(pg.rig.persister.is_stale((schedule(1), 0)));
            }
        }
        assert_eq!(
            pg.rig
                .persister
                .stats()
                .uncertain_commits
                .load(Ordering::Relaxed),
            1
        );
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM reservations WHERE id = 2),
                    (SELECT count(*) FROM holds WHERE reservation_id = 2)",
        )
        .fetch_one(&mut pg.admin)
        .await
        .expect("counts");
        let expected = match after {
            AfterTheCut::Commits => (1, 1),
            AfterTheCut::Terminated => (0, 0),
        };
        assert_eq!(rows, expected);
        // The persister goes on, through new connections, once the pool has found the cut ones
        // dead (each is found by the first statement sent on it).
        pg.sql("SELECT pg_advisory_unlock_all()").await;
        let mut tries = 0;
        while pg.store.ping().await.is_err() {
            tries += 1;
            assert!(tries < 16, "the pool never reached the database again");
        }
        let next = pg.reservation(3, 3, ReservationStatus::Pending);
        let generation = u64::from(after == AfterTheCut::Terminated);
        pg.submit(
            &[(schedule(1), generation)],
            Writes::default().created_reservation(&next),
        );
        assert_eq!(pg.rig.answers(1).await, vec![Ok(())]);
        pg.stop().await;
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_cut_off_is_acknowledged_from_its_marker() {
        a_commit_cut_off(AfterTheCut::Commits).await;
    }

    #[tokio::test]
    async fn a_cut_commit_that_did_not_happen_is_refused_and_rebuilt() {
        a_commit_cut_off(AfterTheCut::Terminated).await;
    }
}
