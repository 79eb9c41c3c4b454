package enginetest

import "strings"

// Messages the engines' tests send, with CRLF line ends as on the wire.
var (
	// Ham is a plain message no engine should call spam.
	Ham = crlf(`Received: from mail.example.com (mail.example.com [192.0.2.10])
	by mx.example.org with ESMTPS id 4AbCdE
	for <bob@example.org>; Mon, 23 Nov 2026 05:50:00 +0000
From: Alice Example <alice@example.com>
To: Bob Example <bob@example.org>
Subject: Minutes of Tuesday's meeting
Date: Mon, 23 Nov 2026 05:49:58 +0000
Message-ID: <20261123054958.1234@mail.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hi Bob,

here are the minutes of Tuesday's meeting. We agreed to move the release
to the first week of December and to review the test plan on Friday.

Thanks,
Alice
`)

	// GTUBE carries the Generic Test for Unsolicited Bulk Email, which
	// SpamAssassin scores 1000 and rspamd rejects whatever else it finds.
	GTUBE = crlf(`From: Spammer <spam@example.net>
To: Bob Example <bob@example.org>
Subject: Test spam mail (GTUBE)
Message-ID: <gtube@example.net>

` + gtubeString + `
`)
)

// gtubeString is assembled so that this file does not itself look like
// spam to a scanner.
const gtubeString = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
