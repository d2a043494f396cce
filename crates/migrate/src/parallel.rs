//! Work spread over the machine's cores: the read-back and the
//! reconciliation parse and compare every stored resource (about 1 KB of
//! JSON each), while the store's own threads are idle, so one thread would
//! leave the other cores waiting. Written here rather than taken from a
//! crate: one function over `std::thread::scope` is all it needs.

/// Items below which one thread does the work alone.
const MIN_PER_THREAD: usize = 64;

/// `items.iter().map(f).collect()`, computed on up to as many threads as
/// the machine has cores (the calling thread being one of them), in order.
/// A panic in `f` is raised again on the calling thread.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let others: Vec<_> =
            items.chunks(chunk).skip(1).map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        let mut out: Vec<R> = Vec::with_capacity(items.len());
        out.extend(items[..chunk].iter().map(f));
        for other in others {
            match other.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_in_order_whatever_the_size() {
        for n in [0usize, 1, 63, 64, 65, 128, 1000, 4097] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let items: Vec<usize> = (0..1000).collect();
        let caught = std::panic::catch_unwind(|| super::map(&items, |i| if *i == 900 { panic!("item 900") } else { *i }));
        assert!(caught.is_err());
    }
}
