//! A connection's future polled again at once when it woke itself while being polled.
//!
//! hyper does this on every request with a body: the connection's own task reads the
//! request, hands the body to the handler through a channel, and the handler, polled in the
//! same task, takes the body from the channel, which wakes the sender: the same task, while
//! it runs. The runtime then treats the task as one that yields: it queues it again and, on
//! a runtime with more than one worker, wakes a parked worker to take it, a second thread
//! for every request. Polled again here instead, the request goes on where it is.
//!
//! With a single worker there is no other thread to wake, and the runtime's way is the
//! better one: the connection waits behind the others ready to run, and by its turn the
//! upstream may have answered (one poll a request fewer when the upstream shares the core,
//! as in the benchmark). There the future is polled as it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The most times the future is polled in one turn of its task before the task goes back
/// to the runtime, so that a future that keeps waking itself (hyper does after serving 16
/// pipelined requests in one go) cannot keep its worker from other tasks for long.
const MAX_POLLS: u32 = 4;

/// Not being polled: a wake-up goes to the runtime.
const IDLE: u8 = 0;
/// Being polled: a wake-up is noted, and the poll repeated once it returns.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

/// `F`, polled again at once (up to [`MAX_POLLS`] polls in all) when it wakes itself while
/// being polled, on a runtime with several workers; a wake-up from elsewhere reaches the
/// runtime as before.
pub struct RepollOnSelfWake<F> {
    inner: F,
    /// `None`: polled as it is.
    repoll: Option<Repoll>,
}

struct Repoll {
    signal: Arc<Signal>,
    waker: Waker,
}

struct Signal {
    state: AtomicU8,
    /// The runtime's waker of the task, as of its last poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Written even when already woken, so that what the waker did before it is seen by
        // the next poll (which starts with a read-modify-write of the state too).
        let noted =
            self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| (state != IDLE).then_some(WOKEN));
        if noted.is_err() {
            let task = self.task.lock().ok().and_then(|task| task.clone());
            if let Some(task) = task {
                task.wake();
            }
        }
    }
}

impl<F: Future + Unpin> RepollOnSelfWake<F> {
    /// `inner`, polled again at once when it wakes itself, if `several_workers`.
    pub fn new(inner: F, several_workers: bool) -> Self {
        let repoll = several_workers.then(|| {
            let signal = Arc::new(Signal { state: AtomicU8::new(IDLE), task: Mutex::new(None) });
            Repoll { waker: Waker::from(signal.clone()), signal }
        });
        RepollOnSelfWake { inner, repoll }
    }
}

impl<F: Future + Unpin> Future for RepollOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(Repoll { signal, waker }) = &this.repoll else { return Pin::new(&mut this.inner).poll(cx) };
        if let Ok(mut task) = signal.task.lock()
            && !task.as_ref().is_some_and(|task| task.will_wake(cx.waker()))
        {
            *task = Some(cx.waker().clone());
        }
        let mut inner_cx = Context::from_waker(waker);
        for _ in 0..MAX_POLLS {
            signal.state.swap(POLLING, Ordering::AcqRel);
            if let Poll::Ready(output) = Pin::new(&mut this.inner).poll(&mut inner_cx) {
                signal.state.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            if signal.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
        }
        signal.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A waker that counts its wake-ups: the runtime's, as the wrapper sees it.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let counter = Arc::new(Counting::default());
        (counter.clone(), Waker::from(counter))
    }

    /// Polled `polls` times in all; wakes itself in each of its first `self_wakes` polls,
    /// and is ready at the poll after them (never, with `usize::MAX`).
    fn waking_itself(self_wakes: usize, polls: Arc<AtomicUsize>) -> impl Future<Output = usize> + Unpin {
        std::future::poll_fn(move |cx| {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            if n < self_wakes {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(n)
            }
        })
    }

    #[test]
    fn a_future_that_wakes_itself_while_polled_is_polled_again_at_once() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut future = pin!(RepollOnSelfWake::new(waking_itself(2, polls.clone()), true));
        let (runtime, waker) = counting();
        assert_eq!(future.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(2));
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(runtime.0.load(Ordering::SeqCst), 0, "the runtime was not asked to poll it again");
    }

    #[test]
    fn a_wake_up_from_another_thread_during_the_poll_is_not_lost() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut future = pin!(RepollOnSelfWake::new(
            std::future::poll_fn(move |cx| {
                if counted.fetch_add(1, Ordering::SeqCst) > 0 {
                    return Poll::Ready(());
                }
                let waker = cx.waker().clone();
                std::thread::spawn(move || waker.wake()).join().unwrap();
                Poll::Pending
            }),
            true
        ));
        let (runtime, waker) = counting();
        assert_eq!(future.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(()));
        assert_eq!((polls.load(Ordering::SeqCst), runtime.0.load(Ordering::SeqCst)), (2, 0));
    }

    #[test]
    fn one_that_keeps_waking_itself_goes_back_to_the_runtime_after_a_few_polls() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut future = pin!(RepollOnSelfWake::new(waking_itself(usize::MAX, polls.clone()), true));
        let (runtime, waker) = counting();
        assert!(future.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), MAX_POLLS as usize);
        assert_eq!(runtime.0.load(Ordering::SeqCst), 1, "woken once, to be polled again later");
    }

    #[test]
    fn a_wake_up_after_the_poll_goes_to_the_latest_waker_of_the_task() {
        let stored: Arc<Mutex<Option<Waker>>> = Arc::default();
        let keep = stored.clone();
        let mut future = pin!(RepollOnSelfWake::new(
            std::future::poll_fn(move |cx| {
                *keep.lock().unwrap() = Some(cx.waker().clone());
                Poll::<()>::Pending
            }),
            true
        ));
        let (first, first_waker) = counting();
        assert!(future.as_mut().poll(&mut Context::from_waker(&first_waker)).is_pending());
        stored.lock().unwrap().take().unwrap().wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 1);

        // Moved to another task's waker (polled from elsewhere): wake-ups follow it.
        let (second, second_waker) = counting();
        assert!(future.as_mut().poll(&mut Context::from_waker(&second_waker)).is_pending());
        stored.lock().unwrap().take().unwrap().wake_by_ref();
        assert_eq!((first.0.load(Ordering::SeqCst), second.0.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn with_one_worker_a_future_is_polled_as_it_is() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut future = pin!(RepollOnSelfWake::new(waking_itself(2, polls.clone()), false));
        let (runtime, waker) = counting();
        assert!(future.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(runtime.0.load(Ordering::SeqCst), 1, "its own wake-up went to the runtime");
    }
}
