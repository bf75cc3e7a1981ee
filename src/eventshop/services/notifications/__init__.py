"""notifications: the emails the shop sends, each exactly once.

consumes  user.registered   -> a welcome email to the new user
          order.confirmed   -> "your order is confirmed", with its lines and total
          order.cancelled   -> "your order was cancelled", saying why in words
publishes notification.sent
HTTP      GET /notifications (the caller's, newest first)

Exactly once: a notification is identified by what it is about, (kind, ref), not by the event
that asked for it; its row is inserted first (a second one for the same (kind, ref) does
nothing), the mail is sent by SMTP, and notification.sent is emitted, all in the handler's
transaction. The mail's Message-ID is derived from (kind, ref) too, so a send repeated after a
crash between the SMTP send and the commit is the same message again, which the receiving
side (here the SMTP sink, `eventshop.tooling.smtp_sink`) recognises as a duplicate.
"""
