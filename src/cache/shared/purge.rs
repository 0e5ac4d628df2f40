//! Purges across replicas: delete a conversation's values (or all) from Redis and tell every replica to drop its local copies.

use super::{Notice, SharedError, SharedTier};
use crate::domain::ConversationId;

/// Deletes every value a conversation's index names, and the index.
const PURGE: &str = r"
local purged = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  purged = purged + redis.call('UNLINK', name)
end
redis.call('UNLINK', KEYS[1])
return purged";

impl SharedTier {
    /// Deletes every value of conversation `id` and tells every replica to
    /// drop its local copies; returns how many values were deleted.
    pub async fn purge_conversation(&self, id: &ConversationId) -> Result<u64, SharedError> {
        let purged = self.delete_conversation(id.as_str()).await?;
        let forget = redis::cmd("ZREM")
            .arg(self.names.conversations())
            .arg(id.as_str())
            .clone();
        self.link.query::<i64>(&forget).await?;
        self.publish(&Notice::Purge(id.as_str().to_owned())).await;
        Ok(purged)
    }

    /// Deletes every value and tells every replica to drop its local copies.
    pub async fn purge_all(&self) -> Result<u64, SharedError> {
        let conversations = self.names.conversations();
        let ids: Vec<String> = self
            .link
            .query(redis::cmd("ZRANGE").arg(&conversations).arg(0).arg(-1))
            .await?;
        let mut purged = 0;
        for id in &ids {
            purged += self.delete_conversation(id).await?;
        }
        self.link
            .query::<i64>(redis::cmd("DEL").arg(&conversations))
            .await?;
        self.publish(&Notice::PurgeAll).await;
        Ok(purged)
    }

    async fn delete_conversation(&self, id: &str) -> Result<u64, SharedError> {
        let Ok(id) = ConversationId::parse(id) else {
            return Ok(0);
        };
        let purge = redis::cmd("EVAL")
            .arg(PURGE)
            .arg(1)
            .arg(self.names.index(&id))
            .clone();
        self.link.query::<u64>(&purge).await
    }
}
