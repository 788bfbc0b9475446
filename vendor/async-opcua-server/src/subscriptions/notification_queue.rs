//! The notification queue of one monitored item.
//!
//! A monitored item of a subscription that keeps up holds at most one notification between two
//! publishes, yet a `VecDeque` keeps the largest buffer it ever needed: four notifications after
//! the first push, sixteen after one burst with a queue size of ten, for as long as the item
//! lives. With 100,000 monitored items that was 40 MB at rest and 150 MB after a burst. This
//! queue holds a single notification inline, and allocates only while it holds more than one,
//! freeing the buffer as soon as it is empty again.

use std::collections::VecDeque;

use super::monitored_item::Notification;

#[derive(Debug, Default)]
pub(crate) enum NotificationQueue {
    #[default]
    Empty,
    One(Notification),
    Many(VecDeque<Notification>),
}

impl NotificationQueue {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(queue) => queue.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn front(&self) -> Option<&Notification> {
        match self {
            Self::Empty => None,
            Self::One(notification) => Some(notification),
            Self::Many(queue) => queue.front(),
        }
    }

    pub(crate) fn push_back(&mut self, notification: Notification) {
        match self {
            Self::Empty => *self = Self::One(notification),
            Self::Many(queue) => queue.push_back(notification),
            Self::One(_) => {
                if let Self::One(first) = std::mem::take(self) {
                    *self = Self::Many(VecDeque::from([first, notification]));
                }
            }
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Notification> {
        self.pop(VecDeque::pop_front)
    }

    pub(crate) fn pop_back(&mut self) -> Option<Notification> {
        self.pop(VecDeque::pop_back)
    }

    fn pop(
        &mut self,
        take: fn(&mut VecDeque<Notification>) -> Option<Notification>,
    ) -> Option<Notification> {
        match self {
            Self::Empty => None,
            Self::One(_) => match std::mem::take(self) {
                Self::One(notification) => Some(notification),
                _ => None,
            },
            Self::Many(queue) => {
                let notification = take(queue);
                if queue.is_empty() {
                    // Free the buffer: a burst does not keep its memory.
                    *self = Self::Empty;
                }
                notification
            }
        }
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        if let Self::Many(queue) = self {
            queue.shrink_to_fit();
        }
    }

    /// Everything queued, oldest first, leaving the queue empty.
    #[cfg(test)]
    pub(crate) fn drain(&mut self, _: std::ops::RangeFull) -> std::vec::IntoIter<Notification> {
        let mut all = Vec::with_capacity(self.len());
        while let Some(notification) = self.pop_front() {
            all.push(notification);
        }
        all.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::{DataValue, MonitoredItemNotification};

    use super::*;

    fn notification(handle: u32) -> Notification {
        Notification::MonitoredItemNotification(MonitoredItemNotification {
            client_handle: handle,
            value: DataValue::null(),
        })
    }

    fn handle(n: Option<Notification>) -> Option<u32> {
        match n? {
            Notification::MonitoredItemNotification(n) => Some(n.client_handle),
            Notification::Event(n) => Some(n.client_handle),
        }
    }

    #[test]
    fn keeps_order_at_both_ends_and_frees_the_buffer_when_empty() {
        let mut queue = NotificationQueue::default();
        assert!(queue.is_empty());
        queue.push_back(notification(1));
        assert!(matches!(queue, NotificationQueue::One(_)));
        queue.push_back(notification(2));
        queue.push_back(notification(3));
        assert_eq!(queue.len(), 3);
        assert_eq!(handle(queue.front().cloned()), Some(1));
        assert_eq!(handle(queue.pop_back()), Some(3));
        assert_eq!(handle(queue.pop_front()), Some(1));
        assert_eq!(handle(queue.pop_front()), Some(2));
        assert!(matches!(queue, NotificationQueue::Empty));
        assert_eq!(handle(queue.pop_front()), None);
        queue.push_back(notification(4));
        assert_eq!(handle(queue.pop_back()), Some(4));
        assert!(queue.is_empty());
    }
}
