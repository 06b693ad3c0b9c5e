"""Every web.AppKey of the notification service."""

from __future__ import annotations

from aiohttp import web

from notification_svc.adapters.broadcasts import BroadcastStore
from notification_svc.adapters.chat_state import ChatStateStore
from notification_svc.adapters.deliveries import DeliveryStore
from notification_svc.adapters.devices import DeviceStore
from notification_svc.adapters.inbox import InboxStore
from notification_svc.adapters.preferences import PreferenceStore
from notification_svc.adapters.smtp import SmtpMailer
from notification_svc.adapters.webhooks import WebhookStore
from notification_svc.handlers import Channels, EmailChannel
from notification_svc.metrics import NotificationMetrics
from notification_svc.sending.webhooks import WebhookChannel
from notification_svc.settings import NotificationSettings
from switchyard.directory import UserDirectory

DELIVERIES = web.AppKey("notification.deliveries", DeliveryStore)
DIRECTORY = web.AppKey("notification.directory", UserDirectory)
PREFERENCES = web.AppKey("notification.preferences", PreferenceStore)
MAILER = web.AppKey("notification.mailer", SmtpMailer)
EMAIL_CHANNEL = web.AppKey("notification.email_channel", EmailChannel)
NOTIFICATION_METRICS = web.AppKey("notification.metrics", NotificationMetrics)
DEVICES = web.AppKey("notification.devices", DeviceStore)
INBOX = web.AppKey("notification.inbox", InboxStore)
CHAT_STATE = web.AppKey("notification.chat_state", ChatStateStore)
CHANNELS = web.AppKey("notification.channels", Channels)
WEBHOOK_STORE = web.AppKey("notification.webhook_store", WebhookStore)
WEBHOOKS = web.AppKey("notification.webhooks", WebhookChannel)
NOTIFICATION_SETTINGS = web.AppKey("notification.settings", NotificationSettings)
BROADCASTS = web.AppKey("notification.broadcasts", BroadcastStore)
