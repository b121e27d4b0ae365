//! A seat's place on the plan a buyer sees: its grade ("VIP"), its row ("B") and its position
//! (`x`, `y`). Labels only: they are fixed when the concert is created and decide nothing about
//! holds or prices. Each schedule keeps its plan once, shared by every read of its seat map.

use std::sync::Arc;

/// Longest grade, in characters: "VIP", "R", "Balcony standing" all fit.
pub const MAX_GRADE_CHARS: usize = 32;
/// Longest row label, in characters: "A", "AA", "Box 12".
pub const MAX_ROW_CHARS: usize = 8;
/// Largest `x` or `y`: a plan of a thousand by a thousand places is more than any hall needs,
/// and small numbers keep the map's JSON short.
pub const MAX_PLAN_COORDINATE: u16 = 999;

/// Where a seat is drawn on the plan, in plan units (0 ..= [`MAX_PLAN_COORDINATE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanPosition {
    x: u16,
    y: u16,
}

impl PlanPosition {
    pub fn new(x: i64, y: i64) -> Result<PlanPosition, SeatPlanError> {
        Ok(PlanPosition {
            x: coordinate(Axis::X, x)?,
            y: coordinate(Axis::Y, y)?,
        })
    }

    pub fn x(self) -> u16 {
        self.x
    }

    pub fn y(self) -> u16 {
        self.y
    }
}

/// Which coordinate a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    X,
    Y,
}

impl std::fmt::Display for Axis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Axis::X => "x",
            Axis::Y => "y",
        })
    }
}

/// Which label a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Grade,
    Row,
}

impl Label {
    pub fn max_chars(self) -> usize {
        match self {
            Label::Grade => MAX_GRADE_CHARS,
            Label::Row => MAX_ROW_CHARS,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Label::Grade => "grade",
            Label::Row => "row",
        })
    }
}

/// Why a seat's plan labels were refused. The messages are the API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatPlanError {
    #[error("{label} must be 1 to {max} characters", max = .label.max_chars())]
    LabelLength { label: Label },
    #[error("{label} must not contain control characters")]
    ControlCharacter { label: Label },
    #[error("{axis} must be 0 to {MAX_PLAN_COORDINATE}")]
    OutOfRange { axis: Axis },
    #[error("x and y must be given together")]
    HalfPosition,
}

/// A seat's plan labels; any of them may be absent (a seat created without a plan has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeatPlan {
    grade: Option<Box<str>>,
    row: Option<Box<str>>,
    position: Option<PlanPosition>,
}

impl SeatPlan {
    /// Checks the labels as given at the edge: each text 1 to its limit in characters with no
    /// control character (they end up in HTML and in button labels), and `x` with `y` or
    /// neither.
    pub fn new(
        grade: Option<String>,
        row: Option<String>,
        x: Option<i64>,
        y: Option<i64>,
    ) -> Result<SeatPlan, SeatPlanError> {
        let position = match (x, y) {
            (Some(x), Some(y)) => Some(PlanPosition::new(x, y)?),
            (None, None) => None,
            _ => return Err(SeatPlanError::HalfPosition),
        };
        Ok(SeatPlan {
            grade: grade.map(|g| label(Label::Grade, g)).transpose()?,
            row: row.map(|r| label(Label::Row, r)).transpose()?,
            position,
        })
    }

    pub fn grade(&self) -> Option<&str> {
        self.grade.as_deref()
    }

    pub fn row(&self) -> Option<&str> {
        self.row.as_deref()
    }

    pub fn position(&self) -> Option<PlanPosition> {
        self.position
    }

    /// No label at all: the seat shows exactly as a seat of the seed contract.
    pub fn is_empty(&self) -> bool {
        self.grade.is_none() && self.row.is_none() && self.position.is_none()
    }
}

/// A schedule's plan, one entry per seat in the order of its seat map; `None` when no seat has
/// a label, so a schedule without a plan costs nothing. Shared, never copied per read.
pub type SchedulePlan = Option<Arc<[SeatPlan]>>;

/// The plan of `labels` (one per seat, or none at all), or `None` if no seat carries a label.
pub fn schedule_plan(labels: Vec<SeatPlan>) -> SchedulePlan {
    if labels.iter().all(SeatPlan::is_empty) {
        None
    } else {
        Some(labels.into())
    }
}

fn label(which: Label, text: String) -> Result<Box<str>, SeatPlanError> {
    let chars = text.chars().count();
    if chars == 0 || chars > which.max_chars() {
        return Err(SeatPlanError::LabelLength { label: which });
    }
    if text.chars().any(char::is_control) {
        return Err(SeatPlanError::ControlCharacter { label: which });
    }
    Ok(text.into_boxed_str())
}

fn coordinate(axis: Axis, value: i64) -> Result<u16, SeatPlanError> {
    u16::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_PLAN_COORDINATE)
        .ok_or(SeatPlanError::OutOfRange { axis })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn a_seat_may_carry_every_label_or_none() {
        let plan = SeatPlan::new(text("VIP"), text("A"), Some(0), Some(999)).unwrap();
        assert_eq!(plan.grade(), Some("VIP"));
        assert_eq!(plan.row(), Some("A"));
        assert_eq!(plan.position(), Some(PlanPosition { x: 0, y: 999 }));
        assert!(!plan.is_empty());
        let none = SeatPlan::new(None, None, None, None).unwrap();
        assert!(none.is_empty());
        assert_eq!(none, SeatPlan::default());
    }

    #[test]
    fn labels_are_counted_in_characters_not_bytes() {
        let grade = "가".repeat(MAX_GRADE_CHARS);
        assert!(grade.len() > MAX_GRADE_CHARS);
        assert!(SeatPlan::new(Some(grade), None, None, None).is_ok());
        assert!(SeatPlan::new(None, Some("열".repeat(MAX_ROW_CHARS)), None, None).is_ok());
    }

    #[test]
    fn each_refusal_names_its_field() {
        let refused = |grade: Option<String>, row: Option<String>, x, y| {
            SeatPlan::new(grade, row, x, y).unwrap_err().to_string()
        };
        assert_eq!(
            refused(text(""), None, None, None),
            "grade must be 1 to 32 characters"
        );
        assert_eq!(
            refused(Some("x".repeat(33)), None, None, None),
            "grade must be 1 to 32 characters"
        );
        assert_eq!(
            refused(None, Some("x".repeat(9)), None, None),
            "row must be 1 to 8 characters"
        );
        assert_eq!(
            refused(text("V\u{0}P"), None, None, None),
            "grade must not contain control characters"
        );
        assert_eq!(
            refused(None, text("A\n"), None, None),
            "row must not contain control characters"
        );
        assert_eq!(
            refused(None, text("\u{85}"), None, None),
            "row must not contain control characters"
        );
        assert_eq!(
            refused(None, None, Some(1), None),
            "x and y must be given together"
        );
        assert_eq!(
            refused(None, None, None, Some(1)),
            "x and y must be given together"
        );
        assert_eq!(refused(None, None, Some(-1), Some(0)), "x must be 0 to 999");
        assert_eq!(
            refused(None, None, Some(0), Some(1000)),
            "y must be 0 to 999"
        );
        assert_eq!(
            refused(None, None, Some(i64::MAX), Some(0)),
            "x must be 0 to 999"
        );
    }

    #[test]
    fn a_schedule_without_labels_has_no_plan() {
        assert_eq!(schedule_plan(Vec::new()), None);
        assert_eq!(schedule_plan(vec![SeatPlan::default(); 3]), None);
        let labelled = SeatPlan::new(text("R"), None, None, None).unwrap();
        let plan = schedule_plan(vec![SeatPlan::default(), labelled.clone()]).unwrap();
        assert_eq!(&plan[..], &[SeatPlan::default(), labelled][..]);
    }

    proptest! {
        #[test]
        fn coordinates_are_accepted_exactly_within_their_bounds(x in -2000i64..2000, y in -2000i64..2000) {
            let inside = |v: i64| (0..=i64::from(MAX_PLAN_COORDINATE)).contains(&v);
            let plan = SeatPlan::new(None, None, Some(x), Some(y));
            prop_assert_eq!(plan.is_ok(), inside(x) && inside(y));
            if let Ok(plan) = plan {
                let p = plan.position().unwrap();
                prop_assert_eq!((i64::from(p.x()), i64::from(p.y())), (x, y));
            }
        }

        #[test]
        fn a_label_is_accepted_exactly_when_short_and_printable(grade in "\\PC{0,40}|[\\x00-\\x1F\\x7F]{1,3}") {
            let chars = grade.chars().count();
            let ok = (1..=MAX_GRADE_CHARS).contains(&chars) && !grade.chars().any(char::is_control);
            prop_assert_eq!(SeatPlan::new(Some(grade.clone()), None, None, None).is_ok(), ok);
        }
    }
}
