"""A corpus of Internet messages shaped like real mail, written for these tests, with the
MAPI properties :func:`internet_mail.mime.mime_to_mapi` must give for each.

Each entry: ``name -> (raw bytes, expected)``. ``expected`` maps a property's canonical
name (``PR_SUBJECT_W``) to its value; ``None`` means "absent". Special keys:
``recipients`` (a list of (type, display name, address)), ``attachments`` (a list of
dicts of the same form, with ``embedded`` for an embedded message's expectations), and
``defects`` (True: the reader must have noted some repair). Messages are written with
LF and sent as CRLF unless their name ends in ``_lf`` (then kept with bare LF).
"""

from __future__ import annotations

import base64
from typing import Any

MAPI_TO, MAPI_CC, MAPI_BCC = 1, 2, 3
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
PDF_B64 = base64.encodebytes(PDF).decode()

_JA_B64 = base64.encodebytes(
    "明日の会議は10時からです。\nよろしくお願いします。\n".encode()
).decode()
_RAW: dict[str, str | bytes] = {}
EXPECTED: dict[str, dict[str, Any]] = {}


def _add(name: str, raw: str | bytes, **expected: Any) -> None:
    _RAW[name] = raw
    EXPECTED[name] = expected


def corpus() -> dict[str, bytes]:
    """The raw messages, line ends as they go on the wire."""
    out = {}
    for name, raw in _RAW.items():
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        out[name] = data if name.endswith("_lf") else data.replace(b"\n", b"\r\n")
    return out


_add(
    "plain_ascii",
    """Return-Path: <alice@example.com>
Received: from mx.example.com (mx.example.com [192.0.2.1])
\tby mail.example.org with ESMTPS id 4AB; Tue, 01 Dec 2026 10:00:01 +0000
From: Alice Example <alice@example.com>
To: Bob <bob@example.org>
Subject: Lunch on Friday?
Date: Tue, 01 Dec 2026 10:00:00 +0000
Message-ID: <20261201100000.1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi Bob,

are you free for lunch on Friday?

Alice
""",
    PR_MESSAGE_CLASS_W="IPM.Note",
    PR_SUBJECT_W="Lunch on Friday?",
    PR_SUBJECT_PREFIX_W="",
    PR_NORMALIZED_SUBJECT_W="Lunch on Friday?",
    PR_SENT_REPRESENTING_NAME_W="Alice Example",
    PR_SENT_REPRESENTING_EMAIL_ADDRESS_W="alice@example.com",
    PR_SENDER_EMAIL_ADDRESS_W="alice@example.com",
    PR_SENDER_ADDRTYPE_W="SMTP",
    PR_CLIENT_SUBMIT_TIME=134405928000000000,
    PR_INTERNET_MESSAGE_ID_W="<20261201100000.1@example.com>",
    PR_BODY_W="Hi Bob,\r\n\r\nare you free for lunch on Friday?\r\n\r\nAlice\r\n",
    PR_INTERNET_CPID=20127,
    PR_HTML=None,
    PR_IMPORTANCE=None,
    recipients=[(MAPI_TO, "Bob", "bob@example.org")],
    attachments=[],
)
_add(
    "latin1_qp",
    """From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>
To: =?iso-8859-1?q?Fran=E7oise?= <francoise@example.fr>
Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=
Date: Mon, 30 Nov 2026 18:15:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable

Sch=F6ne Gr=FC=DFe aus K=F6ln, ein sehr langer Satz der weich umbrochen wird=
 und weitergeht.
""",
    PR_SUBJECT_W="Grüße aus Köln",
    PR_SENT_REPRESENTING_NAME_W="Jörg Müller",
    PR_BODY_W="Schöne Grüße aus Köln, ein sehr langer Satz der weich umbrochen wird und"
    " weitergeht.\r\n",
    PR_INTERNET_CPID=28591,
    recipients=[(MAPI_TO, "Françoise", "francoise@example.fr")],
)
_add(
    "utf8_base64_japanese",
    f"""From: =?UTF-8?B?5bGx55Sw5aSq6YOO?= <taro@example.jp>
To: hanako@example.jp
Subject: =?UTF-8?B?5Lya6K2w44Gu44GK55+l44KJ44Gb?=
Date: Wed, 02 Dec 2026 09:30:00 +0900
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: base64

{_JA_B64}""",
    PR_SUBJECT_W="会議のお知らせ",
    PR_SENT_REPRESENTING_NAME_W="山田太郎",
    PR_BODY_W="明日の会議は10時からです。\r\nよろしくお願いします。\r\n",
    PR_INTERNET_CPID=65001,
    PR_CLIENT_SUBMIT_TIME=134406450000000000,
    recipients=[(MAPI_TO, "hanako@example.jp", "hanako@example.jp")],
)
_add(
    "koi8r_8bit",
    b"From: =?koi8-r?B?6dfBzg==?= <ivan@example.ru>\n"
    b"To: olga@example.ru\n"
    b"Subject: =?koi8-r?B?8NLJ18XU?=\n"
    b"Date: Thu, 03 Dec 2026 12:00:00 +0300\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=koi8-r\n"
    b"Content-Transfer-Encoding: 8bit\n\n" + "Привет, Ольга!\n".encode("koi8-r"),
    PR_SUBJECT_W="Привет",
    PR_SENT_REPRESENTING_NAME_W="Иван",
    PR_BODY_W="Привет, Ольга!\r\n",
    PR_INTERNET_CPID=20866,
)
_add(
    "shift_jis_iso2022_subject",
    b"From: sato@example.jp\n"
    b"To: suzuki@example.jp\n"
    b"Subject: =?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=Shift_JIS\n"
    b"Content-Transfer-Encoding: 8bit\n\n" + "こんにちは、佐藤です。\n".encode("shift_jis"),
    PR_SUBJECT_W="こんにちは",
    PR_BODY_W="こんにちは、佐藤です。\r\n",
    PR_INTERNET_CPID=932,
    PR_CLIENT_SUBMIT_TIME=None,
)
_add(
    "gb2312_html_only",
    b"From: li@example.cn\n"
    b"To: wang@example.cn\n"
    b"Subject: =?GB2312?B?xOO6ww==?=\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/html; charset=gb2312\n"
    b"Content-Transfer-Encoding: 8bit\n\n"
    + "<html><body><p>你好\uff0c世界</p></body></html>\n".encode("gb2312"),
    PR_SUBJECT_W="你好",
    PR_HTML="<html><body><p>你好\uff0c世界</p></body></html>\r\n".encode("gb2312"),
    PR_INTERNET_CPID=936,
    PR_BODY_W=None,
)
_add(
    "alternative",
    """From: "Shop" <news@shop.example>
To: customer@example.net
Subject: Your order has shipped
Date: Fri, 04 Dec 2026 08:00:00 -0500
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1_alt"

This is a multi-part message in MIME format.
--b1_alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Your order #1234 has shipped =E2=80=93 thanks!
--b1_alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Your order <b>#1234</b> has shipped =E2=80=93 thanks!</p></body></html>
--b1_alt--
""",
    PR_BODY_W="Your order #1234 has shipped \u2013 thanks!",
    PR_HTML=(
        "<html><body><p>Your order <b>#1234</b> has shipped \u2013 thanks!</p></body></html>"
    ).encode(),
    PR_INTERNET_CPID=65001,
    PR_SENT_REPRESENTING_NAME_W="Shop",
    attachments=[],
)
_add(
    "html_cp1252",
    b"From: old@example.com\n"
    b"To: new@example.com\n"
    b"Subject: caf\xe9\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/html; charset=windows-1252\n"
    b"Content-Transfer-Encoding: quoted-printable\n\n"
    b"<p>Caf=E9 =93quoted=94</p>\n",
    PR_SUBJECT_W="café",
    PR_HTML=b"<p>Caf\xe9 \x93quoted\x94</p>\r\n",
    PR_INTERNET_CPID=1252,
)
_add(
    "related_inline_image",
    f"""From: Carol <carol@example.com>
To: Dave <dave@example.com>
Subject: Look at this
Date: Sat, 05 Dec 2026 14:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="outer"

--outer
Content-Type: text/plain; charset=us-ascii

Look at this picture.
--outer
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=us-ascii

<p>Look at this picture: <img src="cid:pic1@example.com"></p>
--rel
Content-Type: image/png; name="pic.png"
Content-Transfer-Encoding: base64
Content-ID: <pic1@example.com>

{PNG_B64}
--rel
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-ID: <unused@example.com>

{PNG_B64}
--rel--
--outer--
""",
    PR_BODY_W="Look at this picture.",
    PR_HTML=b'<p>Look at this picture: <img src="cid:pic1@example.com"></p>',
    PR_INTERNET_CPID=20127,
    attachments=[
        {
            "PR_ATTACH_METHOD": 1,
            "PR_ATTACH_MIME_TAG_W": "image/png",
            "PR_ATTACH_CONTENT_ID_W": "pic1@example.com",
            "PR_ATTACH_LONG_FILENAME_W": "pic.png",
            "PR_ATTACH_FLAGS": 4,
            "PR_ATTACHMENT_HIDDEN": True,
            "PR_ATTACH_DATA_BIN": PNG,
        },
        {
            "PR_ATTACH_CONTENT_ID_W": "unused@example.com",
            "PR_ATTACH_FLAGS": 4,
            "PR_ATTACHMENT_HIDDEN": None,
            "PR_ATTACH_LONG_FILENAME_W": None,
        },
    ],
)
_add(
    "mixed_attachments",
    f"""From: Eve <eve@example.com>
To: Frank <frank@example.com>, Grace <grace@example.com>
Cc: Heidi <heidi@example.com>
Subject: Report and data
Date: Sun, 06 Dec 2026 09:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="==mixed=="

--==mixed==
Content-Type: text/plain; charset=us-ascii

Attached are the report and the data.

--==mixed==
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

{PDF_B64}
--==mixed==
Content-Type: text/csv; charset=utf-8; name="data.csv"
Content-Disposition: attachment; filename="data.csv"

a,b
1,2

--==mixed==--
""",
    PR_BODY_W="Attached are the report and the data.\r\n",
    recipients=[
        (MAPI_TO, "Frank", "frank@example.com"),
        (MAPI_TO, "Grace", "grace@example.com"),
        (MAPI_CC, "Heidi", "heidi@example.com"),
    ],
    attachments=[
        {
            "PR_ATTACH_LONG_FILENAME_W": "report.pdf",
            "PR_ATTACH_EXTENSION_W": ".pdf",
            "PR_ATTACH_MIME_TAG_W": "application/pdf",
            "PR_ATTACH_FLAGS": 0,
            "PR_ATTACH_DATA_BIN": PDF,
        },
        {
            "PR_ATTACH_LONG_FILENAME_W": "data.csv",
            "PR_ATTACH_MIME_TAG_W": "text/csv",
            "PR_ATTACH_DATA_BIN": b"a,b\r\n1,2\r\n",
        },
    ],
)
_add(
    "rfc2231_filename",
    f"""From: a@example.com
To: b@example.com
Subject: Rechnung
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="x"

--x
Content-Type: text/plain

Siehe Anhang.
--x
Content-Type: application/pdf
Content-Disposition: attachment;
 filename*0*=utf-8''Rechnung%20M%C3%A4rz%20;
 filename*1*=2026%20%E2%82%AC.pdf
Content-Transfer-Encoding: base64

{PDF_B64}
--x--
""",
    attachments=[{"PR_ATTACH_LONG_FILENAME_W": "Rechnung März 2026 €.pdf"}],
)
_add(
    "rfc2047_filename_outlook",
    f"""From: a@example.com
To: b@example.com
Subject: Photo
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="x"

--x
Content-Type: text/plain; charset="utf-8"

Photo.
--x
Content-Type: image/png; name="=?utf-8?B?w7xiZXJzaWNodC5wbmc=?="
Content-Disposition: attachment; filename="=?utf-8?B?w7xiZXJzaWNodC5wbmc=?="
Content-Transfer-Encoding: base64

{PNG_B64}
--x--
""",
    attachments=[{"PR_ATTACH_LONG_FILENAME_W": "übersicht.png", "PR_ATTACH_DATA_BIN": PNG}],
)
_EMBEDDED_INNER = """From: Original Sender <orig@example.com>
To: Eve <eve@example.com>
Subject: The original
Date: Mon, 23 Nov 2026 07:00:00 +0000
Message-ID: <orig-1@example.com>
Content-Type: text/plain; charset=utf-8

The original text.
"""
_add(
    "forward_as_attachment",
    f"""From: Eve <eve@example.com>
To: Frank <frank@example.com>
Subject: FW: The original
Date: Tue, 24 Nov 2026 07:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fw"

--fw
Content-Type: text/plain

See below.
--fw
Content-Type: message/rfc822
Content-Disposition: attachment

{_EMBEDDED_INNER}
--fw--
""",
    PR_SUBJECT_PREFIX_W="FW: ",
    PR_NORMALIZED_SUBJECT_W="The original",
    attachments=[
        {
            "PR_ATTACH_METHOD": 5,
            "PR_ATTACH_MIME_TAG_W": "message/rfc822",
            "PR_DISPLAY_NAME_W": "The original",
            "PR_ATTACH_DATA_BIN": None,
            "embedded": {
                "PR_SUBJECT_W": "The original",
                "PR_SENT_REPRESENTING_NAME_W": "Original Sender",
                "PR_INTERNET_MESSAGE_ID_W": "<orig-1@example.com>",
                "PR_BODY_W": "The original text.\r\n",
                "recipients": [(MAPI_TO, "Eve", "eve@example.com")],
            },
        }
    ],
)
_add(
    "nested_embedded",
    f"""From: x@example.com
To: y@example.com
Subject: Fwd: Fwd: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="l1"

--l1
Content-Type: text/plain

level 0
--l1
Content-Type: message/rfc822

From: y@example.com
To: z@example.com
Subject: Fwd: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="l2"

--l2
Content-Type: text/plain

level 1
--l2
Content-Type: message/rfc822; name="inner.eml"
Content-Disposition: attachment; filename="inner.eml"

{_EMBEDDED_INNER}
--l2--

--l1--
""",
    PR_SUBJECT_PREFIX_W="Fwd: ",
    PR_BODY_W="level 0",
    attachments=[
        {
            "PR_ATTACH_METHOD": 5,
            "embedded": {
                "PR_BODY_W": "level 1",
                "attachments": [
                    {
                        "PR_ATTACH_METHOD": 5,
                        "PR_ATTACH_LONG_FILENAME_W": "inner.eml",
                        "embedded": {"PR_SUBJECT_W": "The original"},
                    }
                ],
            },
        }
    ],
)
_add(
    "reply_thread",
    """From: Bob <bob@example.org>
To: Alice Example <alice@example.com>
Subject: Re: Lunch on Friday?
Date: Tue, 01 Dec 2026 11:00:00 +0000
Message-ID: <reply-2@example.org>
In-Reply-To: <20261201100000.1@example.com>
References: <thread-0@example.com>
 <20261201100000.1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8; format=flowed

Yes!
""",
    PR_SUBJECT_PREFIX_W="Re: ",
    PR_NORMALIZED_SUBJECT_W="Lunch on Friday?",
    PR_CONVERSATION_TOPIC_W="Lunch on Friday?",
    PR_IN_REPLY_TO_ID_W="<20261201100000.1@example.com>",
    PR_INTERNET_REFERENCES_W="<thread-0@example.com> <20261201100000.1@example.com>",
)
_add(
    "german_prefix",
    """From: a@example.de
To: b@example.de
Subject: AW: WG: Termin
MIME-Version: 1.0

Ok.
""",
    PR_SUBJECT_PREFIX_W="AW: ",
    PR_NORMALIZED_SUBJECT_W="WG: Termin",
    PR_INTERNET_CPID=20127,
    PR_BODY_W="Ok.\r\n",
)
_add(
    "no_prefix_digits",
    """From: a@example.com
To: b@example.com
Subject: 10: the count

x
""",
    PR_SUBJECT_PREFIX_W="",
    PR_NORMALIZED_SUBJECT_W="10: the count",
)
_add(
    "priority_sensitivity",
    """From: boss@example.com
To: staff@example.com
Subject: Low priority, private
X-Priority: 5 (Lowest)
X-MSMail-Priority: Low
Priority: urgent
Sensitivity: Private

text
""",
    PR_IMPORTANCE=0,
    PR_PRIORITY=1,
    PR_SENSITIVITY=2,
)
_add(
    "importance_header",
    """From: boss@example.com
To: staff@example.com
Subject: Important
Importance: High
X-Priority: 5
Sensitivity: Company-Confidential

text
""",
    PR_IMPORTANCE=2,
    PR_SENSITIVITY=3,
    PR_PRIORITY=None,
)
_add(
    "receipts",
    """From: Alice <alice@example.com>
To: bob@example.org
Subject: Please confirm
Disposition-Notification-To: Alice <receipts@example.com>
Return-Receipt-To: alice@example.com

text
""",
    PR_READ_RECEIPT_REQUESTED=True,
    PR_READ_RECEIPT_EMAIL_ADDRESS_W="receipts@example.com",
    PR_ORIGINATOR_DELIVERY_REPORT_REQUESTED=True,
)
_add(
    "reply_to_list",
    """From: List Robot <robot@lists.example.org>
To: members@lists.example.org
Reply-To: Discussion <discuss@lists.example.org>, owner@lists.example.org
Subject: [discuss] Weekly digest

text
""",
    PR_REPLY_RECIPIENT_NAMES_W="Discussion; owner@lists.example.org",
    PR_SUBJECT_PREFIX_W="",
)
_add(
    "sender_on_behalf",
    """From: The CEO <ceo@example.com>
Sender: Assistant <assistant@example.com>
To: all@example.com
Subject: Announcement

text
""",
    PR_SENT_REPRESENTING_NAME_W="The CEO",
    PR_SENT_REPRESENTING_EMAIL_ADDRESS_W="ceo@example.com",
    PR_SENDER_NAME_W="Assistant",
    PR_SENDER_EMAIL_ADDRESS_W="assistant@example.com",
)
_add(
    "bcc_and_groups",
    """From: a@example.com
To: undisclosed-recipients:;
Cc: Team: x@example.com, "Y, Person" <y@example.com>;
Bcc: hidden@example.com
Subject: groups

text
""",
    recipients=[
        (MAPI_CC, "x@example.com", "x@example.com"),
        (MAPI_CC, "Y, Person", "y@example.com"),
        (MAPI_BCC, "hidden@example.com", "hidden@example.com"),
    ],
)
_add(
    "broken_missing_final_boundary",
    """From: a@example.com
To: b@example.com
Subject: truncated
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="cut"

--cut
Content-Type: text/plain

the body
--cut
Content-Type: application/octet-stream; name="data.bin"
Content-Transfer-Encoding: base64

AAECAwQF
""",
    PR_BODY_W="the body",
    attachments=[{"PR_ATTACH_LONG_FILENAME_W": "data.bin", "PR_ATTACH_DATA_BIN": bytes(range(6))}],
    defects=True,
)
_add(
    "broken_boundary_never_used",
    """From: a@example.com
To: b@example.com
Subject: no parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="nowhere"

Just text, no boundary at all.
""",
    PR_SUBJECT_W="no parts",
    defects=True,
)
_add(
    "broken_8bit_headers",
    "From: Zoë Ærøskøbing <zoe@example.dk>\n"
    "To: Ĳsbrand <ijs@example.nl>\n"
    "Subject: Smørrebrød på fredag\n"
    "Content-Type: text/plain\n\n"
    "Velbekomme!\n",
    PR_SUBJECT_W="Smørrebrød på fredag",
    PR_SENT_REPRESENTING_NAME_W="Zoë Ærøskøbing",
    recipients=[(MAPI_TO, "Ĳsbrand", "ijs@example.nl")],
)
_add(
    "broken_latin1_8bit_header",
    b"From: ren\xe9@example.fr\nTo: b@example.fr\nSubject: d\xe9j\xe0 vu\n\nx\n",
    PR_SUBJECT_W="déjà vu",
)
_add(
    "broken_base64",
    """From: a@example.com
To: b@example.com
Subject: bad base64
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain
Content-Transfer-Encoding: base64

SGVsbG8gd29ybGQ!!!*&^
--b
Content-Type: application/octet-stream; name="x.bin"
Content-Transfer-Encoding: base64

AAEC=A=
--b--
""",
    PR_SUBJECT_W="bad base64",
    defects=True,
)
_add(
    "unknown_charset",
    b"From: a@example.com\nTo: b@example.com\n"
    b"Subject: =?x-unknown?q?abc?= and =?utf-8?q?ok=C3=A9?=\n"
    b"Content-Type: text/plain; charset=x-martian\n"
    b"Content-Transfer-Encoding: 8bit\n\n"
    b"caf\xc3\xa9 au lait\n",
    PR_SUBJECT_W="abc and oké",
    PR_BODY_W="café au lait\r\n",
    PR_INTERNET_CPID=65001,
)
_add(
    "bad_date_and_lf_lf",
    "From: a@example.com\nTo: b@example.com\nSubject: lf only\nDate: not a date at all\n\n"
    "line one\nline two\n",
    PR_CLIENT_SUBMIT_TIME=None,
    PR_BODY_W="line one\r\nline two\r\n",
    PR_TRANSPORT_MESSAGE_HEADERS_W="From: a@example.com\nTo: b@example.com\nSubject: lf only\n"
    "Date: not a date at all",
)
_add(
    "headerless_lf",
    "just some text\nwith no header\n",
    PR_SUBJECT_W=None,
    PR_MESSAGE_CLASS_W="IPM.Note",
)
_add("empty", b"", PR_MESSAGE_CLASS_W="IPM.Note", PR_SUBJECT_W=None, recipients=[])
_add(
    "pgp_signed",
    """From: signer@example.com
To: b@example.com
Subject: signed
MIME-Version: 1.0
Content-Type: multipart/signed; micalg=pgp-sha256;
 protocol="application/pgp-signature"; boundary="sig"

--sig
Content-Type: text/plain; charset=utf-8

Signed text.
--sig
Content-Type: application/pgp-signature; name="signature.asc"
Content-Disposition: attachment; filename="signature.asc"

-----BEGIN PGP SIGNATURE-----
iQEzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
--sig--
""",
    PR_BODY_W="Signed text.",
    attachments=[{"PR_ATTACH_MIME_TAG_W": "application/pgp-signature"}],
)
_add(
    "dsn_report",
    """From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: alice@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"

--dsn
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.
--dsn
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; nobody@example.net
Action: failed
Status: 5.1.1
--dsn
Content-Type: message/rfc822-headers

From: alice@example.com
To: nobody@example.net
Subject: hello
--dsn--
""",
    PR_SENT_REPRESENTING_NAME_W="Mail Delivery System",
    attachments=[
        {"PR_ATTACH_MIME_TAG_W": "message/delivery-status", "PR_ATTACH_METHOD": 1},
        {"PR_ATTACH_MIME_TAG_W": "message/rfc822-headers", "PR_ATTACH_METHOD": 1},
    ],
)
_add(
    "calendar_alternative",
    """From: organizer@example.com
To: guest@example.com
Subject: Invitation: Review
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="cal"

--cal
Content-Type: text/plain; charset=utf-8

You are invited.
--cal
Content-Type: text/html; charset=utf-8

<p>You are invited.</p>
--cal
Content-Type: text/calendar; charset=utf-8; method=REQUEST

BEGIN:VCALENDAR
END:VCALENDAR
--cal--
""",
    PR_BODY_W="You are invited.",
    PR_HTML=b"<p>You are invited.</p>",
    attachments=[{"PR_ATTACH_MIME_TAG_W": "text/calendar"}],
)
_add(
    "apple_mixed_inline",
    f"""From: mac@example.com
To: b@example.com
Subject: photo inline
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="apple"

--apple
Content-Type: text/plain; charset=us-ascii

Before the photo.
--apple
Content-Type: image/png; name="IMG_0001.png"
Content-Disposition: inline; filename="IMG_0001.png"
Content-Transfer-Encoding: base64

{PNG_B64}
--apple
Content-Type: text/plain; charset=us-ascii

After the photo.
--apple--
""",
    PR_BODY_W="Before the photo.",
    attachments=[
        {"PR_ATTACH_LONG_FILENAME_W": "IMG_0001.png", "PR_ATTACH_FLAGS": 4},
        {"PR_ATTACH_MIME_TAG_W": "text/plain", "PR_ATTACH_DATA_BIN": b"After the photo."},
    ],
)
_add(
    "long_folded_subject",
    "From: a@example.com\nTo: b@example.com\n"
    "Subject: =?utf-8?q?Une_tr=C3=A8s_longue_ligne_d=27objet_qui_doit_=C3=AAtre?=\n"
    " =?utf-8?q?_repli=C3=A9e_sur_plusieurs_lignes?= and plain words\n\nx\n",
    PR_SUBJECT_W="Une très longue ligne d'objet qui doit être repliée sur plusieurs lignes and"
    " plain words",
)
_add(
    "nested_multipart_mixed",
    """From: a@example.com
To: b@example.com
Subject: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m1"

--m1
Content-Type: multipart/mixed; boundary="m2"

--m2
Content-Type: multipart/alternative; boundary="m3"

--m3
Content-Type: text/plain

deep plain
--m3
Content-Type: text/html

<b>deep html</b>
--m3--
--m2
Content-Type: text/x-diff; name="fix.diff"
Content-Disposition: attachment; filename="fix.diff"

-old
+new
--m2--
--m1
Content-Type: application/zip; name="all.zip"
Content-Transfer-Encoding: base64

UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==
--m1--
""",
    PR_BODY_W="deep plain",
    PR_HTML=b"<b>deep html</b>",
    attachments=[
        {"PR_ATTACH_LONG_FILENAME_W": "fix.diff", "PR_ATTACH_DATA_BIN": b"-old\r\n+new"},
        {"PR_ATTACH_LONG_FILENAME_W": "all.zip", "PR_ATTACH_MIME_TAG_W": "application/zip"},
    ],
)
_add(
    "digest",
    """From: digest@example.org
To: b@example.com
Subject: Digest
MIME-Version: 1.0
Content-Type: multipart/digest; boundary="d"

--d

From: one@example.org
Subject: first

first body
--d

From: two@example.org
Subject: second

second body
--d--
""",
    attachments=[
        {"PR_ATTACH_METHOD": 5, "embedded": {"PR_SUBJECT_W": "first"}},
        {"PR_ATTACH_METHOD": 5, "embedded": {"PR_SUBJECT_W": "second"}},
    ],
)
_add(
    "obsolete_syntax_comments",
    """From: (comment) "Quoted \\"Name\\"" <q@example.com> (trailing)
To: <angle@example.com>, plain@example.com (Plain Person)
Subject:    spaces around\t\t
Date: 1 Dec 2026 10:00 GMT

x
""",
    PR_SENT_REPRESENTING_NAME_W='Quoted "Name" (comment)',  # the stdlib splitter keeps it
    PR_SENT_REPRESENTING_EMAIL_ADDRESS_W="q@example.com",
    PR_SUBJECT_W="spaces around",
    PR_CLIENT_SUBMIT_TIME=134405928000000000,
)
