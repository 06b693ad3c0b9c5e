"""The payments domain: money, accounts, offers and their rules. No aiohttp, pymongo or
aio-pika here."""
