"""Notifications: committed changes turned into events, subscriptions and their queues."""
