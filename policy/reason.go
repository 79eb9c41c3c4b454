package policy

// Reason names why a verdict was given. Reasons are a fixed set: they are the
// transaction log's reason column and the first word of the reply text, so
// admins can search for them and senders can quote them.
type Reason string

const (
	ReasonNone          Reason = ""
	BlockedNetwork      Reason = "BlockedNetwork"
	RelayDenied         Reason = "RelayDenied"
	SenderLoginMismatch Reason = "SenderLoginMismatch"
	SpoofedSender       Reason = "SpoofedSender"
	SPFFail             Reason = "SPFFail"
	SPFSoftFail         Reason = "SPFSoftFail"
	SPFNeutral          Reason = "SPFNeutral"
	SPFNone             Reason = "SPFNone"
	SPFTempError        Reason = "SPFTempError"
	SPFPermError        Reason = "SPFPermError"
	TooManyRecipients   Reason = "TooManyRecipients"
	HeaderTooLarge      Reason = "HeaderTooLarge"
	Busy                Reason = "Busy"          // max_sessions reached
	InternalError       Reason = "InternalError" // mxguard's own trouble: panic, timeout
	LogUnavailable      Reason = "LogUnavailable"
	NoTransaction       Reason = "NoTransaction" // connection closed without MAIL FROM
	Aborted             Reason = "Aborted"       // client or MTA gave up mid-transaction
	SpoolError          Reason = "SpoolError"    // the body could not be kept (disk full)
	BlockedSender       Reason = "BlockedSender" // in a blocked senders list
	Virus               Reason = "Virus"
	VirusScanFailed     Reason = "VirusScanFailed" // the virus engine is down, slow or talks nonsense
	SpamTag             Reason = "SpamTag"
	SpamQuarantine      Reason = "SpamQuarantine"
	SpamReject          Reason = "SpamReject"
	SpamScanFailed      Reason = "SpamScanFailed"
	BlockedAttachment   Reason = "BlockedAttachment"
	FromHeaderInvalid   Reason = "FromHeaderInvalid" // no, several or unparsable From: DMARC cannot apply
	DMARCReject         Reason = "DMARCReject"
	DMARCQuarantine     Reason = "DMARCQuarantine"
	DMARCTempError      Reason = "DMARCTempError"
	SigningFailed       Reason = "SigningFailed"
)
