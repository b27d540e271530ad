//! Schedules compiled to minute bitmaps, and local wall time.
//!
//! A schedule is evaluated on the local wall time of the door's site at the
//! decision's instant. The instant maps to exactly one wall time, so
//! daylight-saving transitions need no special case and behave like a wall
//! clock on site:
//!
//! - spring forward (e.g. New York, 2026-03-08, 02:00 → 03:00): minutes in the
//!   gap never occur, so an interval 02:00–02:30 is never active that day,
//!   and 01:30–03:30 is active for one real hour;
//! - fall back (2026-11-01, 02:00 → 01:00): minutes in the overlap occur
//!   twice, so an interval 01:00–01:30 is active twice that night.

use hashbrown::HashSet;
use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use crate::model::{Interval, ScheduleRecord};

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const WEEK_WORDS: usize = MINUTES_PER_WEEK.div_ceil(64) as usize;
const DAY_WORDS: usize = MINUTES_PER_DAY.div_ceil(64) as usize;

/// Local wall time at one instant, as the schedule evaluation needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LocalTime {
    /// Local date as days since 1970-01-01.
    pub(crate) day: i32,
    /// Minutes since local Monday 00:00.
    pub(crate) minute_of_week: u32,
    /// Minutes since local midnight.
    pub(crate) minute_of_day: u32,
}

impl LocalTime {
    /// The local wall time in `tz` at `now`.
    pub(crate) fn at(tz: &TimeZone, now: Timestamp) -> Self {
        let offset = tz.to_offset(now);
        let local = now.as_second() + i64::from(offset.seconds());
        let day = local.div_euclid(86_400);
        let minute_of_day = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday: index 3 with Monday as 0.
        let weekday = (day + 3).rem_euclid(7) as u32;
        Self {
            day: day as i32,
            minute_of_week: weekday * MINUTES_PER_DAY + minute_of_day,
            minute_of_day,
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian). Used
/// when schedules are compiled, not per decision: jiff's arithmetic.
/// (`LocalTime::at`, on the decision path, divides seconds instead.)
pub(crate) fn epoch_day(date: Date) -> i32 {
    (date - Date::constant(1970, 1, 1)).get_days()
}

/// A schedule ready for O(1) evaluation.
#[derive(Clone, Debug)]
pub(crate) struct CompiledSchedule {
    week: Box<[u64; WEEK_WORDS]>,
    holiday: Box<[u64; DAY_WORDS]>,
    /// Local dates (epoch days) on which `holiday` replaces `week`.
    holidays: HashSet<i32, foldhash::fast::FixedState>,
}

/// What is wrong with a schedule's intervals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// An interval starts and ends at the same time.
    #[error(
        "`{list}[{index}]` is empty: start and end are both {time} (only 00:00 to 00:00 means the whole day)"
    )]
    Empty {
        /// Which list: `intervals` or `holiday_intervals`.
        list: &'static str,
        /// Which interval (0-based) of the list.
        index: usize,
        /// Its start (and end).
        time: Time,
    },
    /// An interval lists no days.
    #[error("`{list}[{index}]` lists no days")]
    NoDays {
        /// Which list: `intervals` or `holiday_intervals`.
        list: &'static str,
        /// Which interval (0-based) of the list.
        index: usize,
    },
    /// A time has seconds; schedules have minute precision.
    #[error("`{list}[{index}]`: time {time} has seconds; use whole minutes")]
    NotWholeMinute {
        /// Which list: `intervals` or `holiday_intervals`.
        list: &'static str,
        /// Which interval (0-based) of the list.
        index: usize,
        /// The offending time.
        time: Time,
    },
    /// Two intervals cover the same minute.
    #[error("`{list}[{index}]` overlaps an earlier interval (first shared minute: {day} {time})")]
    Overlap {
        /// Which list: `intervals` or `holiday_intervals`.
        list: &'static str,
        /// Which interval (0-based) of the list.
        index: usize,
        /// The day of the first shared minute.
        day: &'static str,
        /// The first shared minute.
        time: Time,
    },
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minute(list: &'static str, index: usize, t: Time) -> Result<u32, ScheduleError> {
    if t.second() != 0 || t.subsec_nanosecond() != 0 {
        return Err(ScheduleError::NotWholeMinute {
            list,
            index,
            time: t,
        });
    }
    Ok(u32::from(t.hour() as u8) * 60 + u32::from(t.minute() as u8))
}

fn set_bits(
    bits: &mut [u64],
    span: u32,
    from: u32,
    len: u32,
    (list, index): (&'static str, usize),
) -> Result<(), ScheduleError> {
    for m in from..from + len {
        let m = m % span;
        let (word, bit) = ((m / 64) as usize, m % 64);
        let Some(w) = bits.get_mut(word) else {
            continue;
        };
        if *w & (1 << bit) != 0 {
            let day = DAY_NAMES
                .get(((m / MINUTES_PER_DAY) % 7) as usize)
                .copied()
                .unwrap_or("?");
            let mod_day = m % MINUTES_PER_DAY;
            let time =
                Time::new((mod_day / 60) as i8, (mod_day % 60) as i8, 0, 0).unwrap_or(Time::MIN);
            return Err(ScheduleError::Overlap {
                list,
                index,
                day,
                time,
            });
        }
        *w |= 1 << bit;
    }
    Ok(())
}

fn span_of(
    list: &'static str,
    index: usize,
    interval: &Interval,
) -> Result<(u32, u32), ScheduleError> {
    let start = minute(list, index, interval.start)?;
    let end = minute(list, index, interval.end)?;
    if start == end && start == 0 {
        // 00:00 to 00:00: the whole day.
        return Ok((0, MINUTES_PER_DAY));
    }
    if start == end {
        return Err(ScheduleError::Empty {
            list,
            index,
            time: interval.start,
        });
    }
    let len = if end > start {
        end - start
    } else {
        MINUTES_PER_DAY - start + end
    };
    Ok((start, len))
}

impl CompiledSchedule {
    /// Compiles a schedule's intervals. Holiday dates come from the holiday
    /// sets, resolved by the caller.
    pub(crate) fn compile(
        record: &ScheduleRecord,
        holidays: impl IntoIterator<Item = Date>,
    ) -> Result<Self, ScheduleError> {
        let mut week = Box::new([0u64; WEEK_WORDS]);
        for (index, interval) in record.intervals.iter().enumerate() {
            if interval.days.is_empty() {
                return Err(ScheduleError::NoDays {
                    list: "intervals",
                    index,
                });
            }
            let (start, len) = span_of("intervals", index, interval)?;
            let mut days = interval.days.clone();
            days.sort();
            days.dedup();
            for day in days {
                let from = day.index() as u32 * MINUTES_PER_DAY + start;
                set_bits(
                    &mut week[..],
                    MINUTES_PER_WEEK,
                    from,
                    len,
                    ("intervals", index),
                )?;
            }
        }
        let mut holiday = Box::new([0u64; DAY_WORDS]);
        for (index, interval) in record.holiday_intervals.iter().enumerate() {
            let (start, len) = span_of("holiday_intervals", index, interval)?;
            // On a holiday only the holiday's own date counts: an interval
            // past midnight wraps to the start of the same date.
            set_bits(
                &mut holiday[..],
                MINUTES_PER_DAY,
                start,
                len,
                ("holiday_intervals", index),
            )?;
        }
        Ok(Self {
            week,
            holiday,
            holidays: holidays.into_iter().map(epoch_day).collect(),
        })
    }

    /// Whether the schedule is active at local time `t`.
    #[inline]
    pub(crate) fn is_active(&self, t: LocalTime) -> bool {
        if !self.holidays.is_empty() && self.holidays.contains(&t.day) {
            return bit(&self.holiday[..], t.minute_of_day);
        }
        bit(&self.week[..], t.minute_of_week)
    }
}

#[inline]
fn bit(bits: &[u64], m: u32) -> bool {
    bits.get((m / 64) as usize)
        .is_some_and(|w| w & (1 << (m % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Day;
    use jiff::civil::date;

    fn iv(days: &[Day], start: &str, end: &str) -> Interval {
        Interval {
            days: days.to_vec(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    fn sched(intervals: Vec<Interval>) -> ScheduleRecord {
        ScheduleRecord {
            id: "s".into(),
            intervals,
            holiday_sets: vec![],
            holiday_intervals: vec![],
        }
    }

    #[test]
    fn epoch_days_are_days_since_1970() {
        // Reference values from Python's datetime.date subtraction.
        for (d, expected) in [
            (date(1970, 1, 1), 0),
            (date(2000, 2, 29), 11_016),
            (date(2026, 3, 8), 20_520),
            (date(1969, 12, 31), -1),
            (date(2400, 12, 31), 157_419),
        ] {
            assert_eq!(epoch_day(d), expected, "{d}");
        }
        // And the decision path's division agrees with it.
        let t = LocalTime::at(&TimeZone::UTC, "2026-03-08T23:59:00Z".parse().unwrap());
        assert_eq!(t.day, epoch_day(date(2026, 3, 8)));
    }

    #[test]
    fn local_time_weekday_and_minute() {
        let tz = TimeZone::get("America/New_York").unwrap();
        // Monday 2026-11-30 09:15 EST = 14:15Z.
        let t = LocalTime::at(&tz, "2026-11-30T14:15:00Z".parse().unwrap());
        assert_eq!(t.minute_of_week, 9 * 60 + 15);
        assert_eq!(t.day, epoch_day(date(2026, 11, 30)));
        // Sunday 23:59 local.
        let t = LocalTime::at(&tz, "2026-11-30T04:59:00Z".parse().unwrap());
        assert_eq!(t.minute_of_week, 6 * 1440 + 23 * 60 + 59);
    }

    #[test]
    fn interval_bounds_start_inclusive_end_exclusive_and_past_midnight() {
        let s = CompiledSchedule::compile(
            &sched(vec![
                iv(&[Day::Mon], "08:00", "17:00"),
                iv(&[Day::Sun], "22:00", "02:00"),
            ]),
            [],
        )
        .unwrap();
        let at = |m: u32| LocalTime {
            day: 0,
            minute_of_week: m,
            minute_of_day: m % 1440,
        };
        assert!(!s.is_active(at(8 * 60 - 1)));
        assert!(s.is_active(at(8 * 60)));
        assert!(s.is_active(at(17 * 60 - 1)));
        assert!(!s.is_active(at(17 * 60)));
        // Sunday 22:00 to Monday 02:00 wraps around the week.
        assert!(s.is_active(at(6 * 1440 + 22 * 60)));
        assert!(s.is_active(at(60)));
        assert!(!s.is_active(at(2 * 60)));
    }

    #[test]
    fn bad_intervals_are_rejected() {
        let empty = CompiledSchedule::compile(&sched(vec![iv(&[Day::Mon], "08:00", "08:00")]), []);
        assert!(matches!(empty, Err(ScheduleError::Empty { index: 0, .. })));
        let overlap = CompiledSchedule::compile(
            &sched(vec![
                iv(&[Day::Mon], "08:00", "12:00"),
                iv(&[Day::Tue, Day::Mon], "11:00", "13:00"),
            ]),
            [],
        );
        assert!(
            matches!(
                overlap,
                Err(ScheduleError::Overlap {
                    index: 1,
                    day: "mon",
                    ..
                })
            ),
            "{overlap:?}"
        );
        let no_days = CompiledSchedule::compile(&sched(vec![iv(&[], "08:00", "09:00")]), []);
        assert!(matches!(
            no_days,
            Err(ScheduleError::NoDays {
                list: "intervals",
                index: 0
            })
        ));
        let seconds =
            CompiledSchedule::compile(&sched(vec![iv(&[Day::Mon], "08:00:30", "09:00")]), []);
        assert!(matches!(seconds, Err(ScheduleError::NotWholeMinute { .. })));
        // A problem in the holiday list names that list, so the operator
        // finds the interval the index counts in.
        let mut holiday = sched(vec![iv(&[Day::Mon], "08:00", "12:00")]);
        holiday.holiday_intervals = vec![iv(&[], "08:00", "12:00"), iv(&[], "10:00", "10:00")];
        let err = CompiledSchedule::compile(&holiday, []).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`holiday_intervals[1]` is empty: start and end are both 10:00:00 \
             (only 00:00 to 00:00 means the whole day)"
        );
    }
}
