//! The bound on what waits for the writer, and the order the writer takes it in.
//!
//! Every job holds its *room* — records and KiB, from its lane's share and from the whole
//! queue — until it is committed; a sender waits for room (or, for senders nobody answers,
//! gets none and drops). The writer takes one job per lane in turn.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::{Item, JOB_RECORDS, LANE_SHARE, QueueLimits, StoreError, Written, stopped};

/// The writer's answer to a job, and the job's records handed back: they are freed by the task
/// that made them, not on the writer thread (freeing another thread's allocations there cost
/// the writer a lock and a slow path per record).
pub(super) type Answered = (Result<Vec<Written>, StoreError>, Vec<super::Item>);

pub(super) struct Job {
    /// Whose turn it is in: a device's or a source's.
    pub(super) lane: Arc<str>,
    pub(super) items: Vec<Item>,
    /// KiB of camera images it carries: what makes a transaction long (their bytes are
    /// written and synced), where readings cost per record.
    pub(super) image_kib: u32,
    pub(super) done: oneshot::Sender<Answered>,
    /// Its room in the queue, given back once it is committed.
    pub(super) _room: Room,
}

/// Room in the writer's queue, in records and KiB: the lane's share and the whole queue's.
pub(super) struct Room(
    #[allow(dead_code, reason = "held, not read: dropping it gives the room back")]
    pub(super)  Vec<OwnedSemaphorePermit>,
);

/// Records and KiB, as permits.
pub(super) struct Allowance {
    pub(super) records: Arc<Semaphore>,
    pub(super) kib: Arc<Semaphore>,
}

impl Allowance {
    pub(super) fn new(records: usize, kib: usize) -> Allowance {
        Allowance {
            records: Arc::new(Semaphore::new(records.max(1))),
            kib: Arc::new(Semaphore::new(kib.max(1))),
        }
    }

    pub(super) async fn wait(
        &self,
        records: u32,
        kib: u32,
        room: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), StoreError> {
        for (semaphore, n) in [(&self.records, records), (&self.kib, kib)] {
            let permit = Arc::clone(semaphore)
                .acquire_many_owned(n)
                .await
                .map_err(|_| stopped())?;
            room.push(permit);
        }
        Ok(())
    }

    /// Permits now, if `keep` of each stays free after.
    pub(super) fn try_take(
        &self,
        records: u32,
        kib: u32,
        keep: (usize, usize),
        room: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        for (semaphore, n, keep) in [(&self.records, records, keep.0), (&self.kib, kib, keep.1)] {
            if semaphore.available_permits() < n as usize + keep {
                return false;
            }
            match Arc::clone(semaphore).try_acquire_many_owned(n) {
                Ok(permit) => room.push(permit),
                Err(_) => return false,
            }
        }
        true
    }

    /// Nobody holds or waits for any of it.
    pub(super) fn idle(&self) -> bool {
        Arc::strong_count(&self.records) == 1 && Arc::strong_count(&self.kib) == 1
    }
}

/// The writer's queue bound: the whole queue's, and each lane's share of it (a quarter), so
/// that one busy device cannot take all the room and make every other wait to be let in.
pub(super) struct Budget {
    pub(super) all: Allowance,
    pub(super) lanes: std::sync::Mutex<HashMap<Arc<str>, Arc<Allowance>>>,
    pub(super) limits: QueueLimits,
}

impl Budget {
    pub(super) fn new(limits: QueueLimits) -> Budget {
        Budget {
            all: Allowance::new(limits.records, limits.bytes.div_ceil(1024)),
            lanes: std::sync::Mutex::default(),
            limits,
        }
    }

    /// `lane`'s share.
    pub(super) fn lane(&self, lane: &Arc<str>) -> Arc<Allowance> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = lanes.get(lane) {
            return Arc::clone(share);
        }
        if lanes.len() >= 1024 {
            lanes.retain(|_, share| !share.idle());
        }
        let share = Arc::new(Allowance::new(
            self.limits.records / LANE_SHARE,
            self.limits.bytes.div_ceil(1024) / LANE_SHARE,
        ));
        lanes.insert(Arc::clone(lane), Arc::clone(&share));
        share
    }

    /// Cuts items into jobs that fit a lane's share: at most [`JOB_RECORDS`] records and an
    /// eighth of the byte bound each (a single record always fits: lines are far smaller).
    pub(super) fn cut(&self, mut items: Vec<Item>) -> Vec<(Vec<Item>, u32, u32)> {
        let most_bytes = (self.limits.bytes / 8).max(1024);
        let most_records = JOB_RECORDS.min(self.limits.records / LANE_SHARE).max(1);
        // Weighed in bytes and rounded up to KiB per job, not per record: a reading weighs
        // about 600 bytes, and counting each as a KiB would fill the queue's byte bound at
        // about half of what it holds.
        // Where each job ends, and its bytes; the items are not moved to find out.
        let mut ends = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, item) in items.iter().enumerate() {
            let weight = item.weight();
            if i > start && (i - start == most_records || bytes + weight > most_bytes) {
                ends.push((i, std::mem::take(&mut bytes)));
                start = i;
            }
            bytes += weight;
        }
        if !items.is_empty() {
            ends.push((items.len(), bytes));
        }
        // Cut from the back, so the first job keeps the submission's own vector (the usual
        // submission is one job, and no record is moved).
        let mut jobs = Vec::with_capacity(ends.len());
        for k in (0..ends.len()).rev() {
            let job = match k {
                0 => std::mem::take(&mut items),
                _ => items.split_off(ends[k - 1].0),
            };
            let records = job.len() as u32;
            let kib = ends[k].1.min(most_bytes).div_ceil(1024);
            jobs.push((job, records, kib as u32));
        }
        jobs.reverse();
        jobs
    }

    /// Waits for room in `lane`'s share, then in the queue.
    pub(super) async fn wait(
        &self,
        lane: &Arc<str>,
        records: u32,
        kib: u32,
    ) -> Result<Room, StoreError> {
        let mut room = Vec::with_capacity(4);
        self.lane(lane).wait(records, kib, &mut room).await?;
        self.all.wait(records, kib, &mut room).await?;
        Ok(Room(room))
    }

    /// Whether `records` more could be taken now by [`try_take`](Self::try_take) (as far as
    /// the record count tells): checked before a datagram is parsed.
    pub(super) fn could_take(&self, lane: &Arc<str>, records: usize) -> bool {
        let free = |a: &Allowance| a.records.available_permits();
        free(&self.lane(lane)) >= records && free(&self.all) >= records + self.limits.records / 2
    }

    /// Room now in `lane`'s share and in the queue, if taking it leaves at least half of the
    /// queue free.
    pub(super) fn try_take(
        &self,
        lane: &Arc<str>,
        records: u32,
        kib: u32,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut room = Vec::with_capacity(4);
        let half = (
            self.limits.records / 2,
            self.limits.bytes.div_ceil(1024) / 2,
        );
        (self.lane(lane).try_take(records, kib, (0, 0), &mut room)
            && self.all.try_take(records, kib, half, &mut room))
        .then_some(room)
    }
}

/// Jobs waiting for the writer, by lane, taken in turn.
#[derive(Default)]
pub(super) struct Lanes {
    waiting: HashMap<Arc<str>, VecDeque<Job>>,
    /// Lanes with jobs, in the order of their next turn.
    turns: VecDeque<Arc<str>>,
}

impl Lanes {
    pub(super) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    pub(super) fn push(&mut self, job: Job) {
        let lane = self.waiting.entry(Arc::clone(&job.lane)).or_default();
        if lane.is_empty() {
            self.turns.push_back(Arc::clone(&job.lane));
        }
        lane.push_back(job);
    }

    /// One job from each lane in turn until `most` records or `most_kib` of images are taken
    /// (at least one job).
    pub(super) fn take(&mut self, most: usize, most_kib: usize) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut count = 0;
        let mut kib = 0;
        while count < most && kib < most_kib {
            let Some(key) = self.turns.pop_front() else {
                break;
            };
            let lane = self
                .waiting
                .get_mut(&key)
                .expect("a lane with a turn has jobs");
            let job = lane.pop_front().expect("a lane with a turn has jobs");
            if lane.is_empty() {
                self.waiting.remove(&key);
            } else {
                self.turns.push_back(key);
            }
            count += job.items.len();
            kib += job.image_kib as usize;
            jobs.push(job);
        }
        jobs
    }
}
