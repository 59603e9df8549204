// SPDX-License-Identifier: MPL-2.0
//! The SQS side: receive contact events, keep them invisible while their
//! call records, delete them once the recording is in S3, give them back
//! otherwise.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::explain as err;

pub struct Queue {
    pub sqs: Client,
    pub url: String,
}

pub struct Message {
    pub id: String,
    pub body: String,
    pub handle: String,
    pub receives: u32,
}

impl Queue {
    /// Up to `max` messages, waiting up to `wait_s` for the first.
    pub async fn receive(
        &self,
        max: usize,
        wait_s: i32,
        visibility_s: i32,
    ) -> Result<Vec<Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_s)
            .visibility_timeout(visibility_s)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| err("cannot receive from the queue", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receives = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(Message {
                    id: m.message_id.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    handle: m.receipt_handle?,
                    receives,
                })
            })
            .collect())
    }

    /// Keeps the message from other workers for `seconds` more (0: at once
    /// visible again).
    pub async fn hide(&self, m: &Message, seconds: i32) -> Result<(), String> {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&m.handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("cannot change the message's visibility", e))
    }

    pub async fn delete(&self, m: &Message) -> Result<(), String> {
        self.sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&m.handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("cannot delete the message", e))
    }
}
