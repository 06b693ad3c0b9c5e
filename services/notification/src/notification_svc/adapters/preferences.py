"""``notification_preferences``: one per user who changed something; version-guarded."""

from __future__ import annotations

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notification_svc.domain.preferences import Preferences
from switchyard.envelope import utcnow
from switchyard.mongo import stored_time
from switchyard.mongo.client import Document

COLLECTION = "notification_preferences"


class PreferencesConflict(Exception):
    """Someone saved the preferences since they were read."""


class PreferenceStore:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def get(self, user_id: str) -> Preferences:
        doc = await self.collection.find_one({"_id": user_id})
        if doc is None:
            return Preferences(user_id)
        return Preferences(user_id, doc.get("choices", {}), int(doc.get("version", 0)))

    async def save(self, preferences: Preferences) -> None:
        """Store ``preferences`` if the stored version is still the one it was derived from."""
        expected = preferences.version - 1
        fields = {
            "choices": {
                category: dict(channels) for category, channels in preferences.choices.items()
            },
            "version": preferences.version,
            "updated": stored_time(utcnow()),
        }
        if expected == 0:
            try:
                await self.collection.insert_one({"_id": preferences.user_id, **fields})
                return
            except DuplicateKeyError:
                raise PreferencesConflict(preferences.user_id) from None
        result = await self.collection.update_one(
            {"_id": preferences.user_id, "version": expected}, {"$set": fields}
        )
        if result.matched_count == 0:
            raise PreferencesConflict(preferences.user_id)

    async def erase(self, user_id: str) -> None:
        await self.collection.delete_one({"_id": user_id})
