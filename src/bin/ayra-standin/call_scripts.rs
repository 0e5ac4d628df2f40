//! The canned phone calls that fake transcripts are made of.
//!
//! Plain ASCII without quotes or backslashes, so the JSON size of a line is
//! its length.

/// Who says a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The Ayra voice agent.
    Agent,
    /// The person on the phone.
    Caller,
}

impl Speaker {
    /// The name used in `messages[].speaker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Agent => "agent",
            Speaker::Caller => "caller",
        }
    }

    /// The label used in `full_text`.
    pub fn label(self) -> &'static str {
        match self {
            Speaker::Agent => "Agent",
            Speaker::Caller => "Caller",
        }
    }
}

/// One canned call: its lines, in order, and what analytics would find in it.
#[derive(Debug)]
pub struct CallScript {
    /// The conversation, turn by turn.
    pub lines: &'static [(Speaker, &'static str)],
    /// `analytics.keywords_detected`.
    pub keywords: &'static [&'static str],
    /// `analytics.topics`.
    pub topics: &'static [&'static str],
    /// `analytics.outcome`.
    pub outcome: &'static str,
}

use Speaker::{Agent, Caller};

/// Every canned call; a conversation id picks one.
pub const CALL_SCRIPTS: &[CallScript] = &[
    CallScript {
        lines: &[
            (Agent, "Thank you for calling Northwind Energy, this is Ava. How can I help you today?"),
            (Caller, "Hi, I was charged twice on my last bill and I would like to get that sorted out."),
            (Agent, "I am sorry about that. Could you confirm the account number or the phone number on the account?"),
            (Caller, "Sure, it is the number I am calling from."),
            (Agent, "Thank you. I can see the account. For security, can you confirm the postcode on file?"),
            (Caller, "It is 94107."),
            (Agent, "Perfect, you are verified. I can see two payments of 84 dollars and 20 cents on March 3rd."),
            (Caller, "Yes, that is exactly the problem. The second one should not be there."),
            (Agent, "You are right, the second payment was a duplicate caused by a retry on our side."),
            (Caller, "Okay, so can I get a refund for it?"),
            (Agent, "Absolutely. I have issued a refund of 84 dollars and 20 cents to the card ending in 4417."),
            (Caller, "How long will that take to show up?"),
            (Agent, "Refunds usually appear within three to five business days, depending on your bank."),
            (Caller, "That is fine. Will this happen again next month?"),
            (Agent, "I have flagged the account so the billing system only attempts a single charge going forward."),
            (Caller, "Great, thank you."),
            (Agent, "You will also receive a confirmation email with the refund reference in a few minutes."),
            (Caller, "Perfect, I will keep an eye out for it."),
            (Agent, "Is there anything else I can help you with today?"),
            (Caller, "No, that was everything. Thanks for the quick help."),
            (Agent, "My pleasure. Have a wonderful day and thank you for choosing Northwind Energy."),
        ],
        keywords: &["billing", "refund", "duplicate charge"],
        topics: &["billing_dispute", "refund_request"],
        outcome: "resolved",
    },
    CallScript {
        lines: &[
            (Agent, "Good morning, Riverside Dental, this is Ava speaking. How may I help you?"),
            (Caller, "Hello, I need to move my cleaning appointment next week."),
            (Agent, "Of course. May I have your full name and date of birth, please?"),
            (Caller, "Maria Gonzales, the twelfth of June, 1986."),
            (Agent, "Thank you, Maria. I see you are booked for Tuesday at 9 in the morning with Doctor Patel."),
            (Caller, "Right, something came up at work so Tuesday does not work anymore."),
            (Agent, "No problem. Doctor Patel has openings on Thursday at 2 pm or Friday at 10 am."),
            (Caller, "Hmm, is there anything later on Thursday?"),
            (Agent, "Let me check. Thursday at 4 30 pm is also available."),
            (Caller, "That works much better for me."),
            (Agent, "Great, I have moved your appointment to Thursday at 4 30 pm with Doctor Patel."),
            (Caller, "Thanks. Do I need to bring anything?"),
            (Agent, "Just your insurance card, since your plan renewed at the start of the year."),
            (Caller, "Okay, I will bring it."),
            (Agent, "You will get a text reminder the day before the appointment."),
            (Caller, "Can the reminder go to my email instead?"),
            (Agent, "Sure, I have switched your reminders to email. Is the address ending in example dot com correct?"),
            (Caller, "Yes, that is the one."),
            (Agent, "All set. Is there anything else I can do for you?"),
            (Caller, "No, thank you so much."),
            (Agent, "You are welcome, Maria. See you on Thursday."),
        ],
        keywords: &["appointment", "reschedule", "insurance"],
        topics: &["scheduling"],
        outcome: "appointment_rescheduled",
    },
    CallScript {
        lines: &[
            (Agent, "Thanks for calling Brightline Internet support, this is Ava. What can I help with?"),
            (Caller, "My internet keeps dropping every few minutes since yesterday evening."),
            (Agent, "I am sorry to hear that. Can you tell me which lights are on on your router right now?"),
            (Caller, "The power light is green but the internet light keeps blinking orange."),
            (Agent, "Thank you. I am running a line test on your connection now, it takes about thirty seconds."),
            (Caller, "Okay, I will wait."),
            (Agent, "The test shows signal noise on the line. Have you added any new devices or cables recently?"),
            (Caller, "Not that I know of. Oh wait, we moved the router to another room."),
            (Agent, "That could be it. Is it now connected through an extension cable?"),
            (Caller, "Yes, a long phone cable along the hallway."),
            (Agent, "Long extension cables often cause exactly this. Could you connect the router to the main socket?"),
            (Caller, "Give me a minute. Okay, it is plugged into the main socket now."),
            (Agent, "Thank you. The router is resynchronising. The internet light should turn white shortly."),
            (Caller, "It just turned white."),
            (Agent, "The line test now looks clean. Your speed is back to 300 megabits."),
            (Caller, "Great, but I really want the router in the other room."),
            (Agent, "I can send you a mesh extender at no cost, which gives you coverage there without the cable."),
            (Caller, "That would be perfect, yes please."),
            (Agent, "Done. It will arrive within two days. Is there anything else I can help with?"),
            (Caller, "No, that is all. Thanks for the help."),
            (Agent, "Happy to help. Enjoy the rest of your day."),
        ],
        keywords: &["outage", "router", "mesh extender"],
        topics: &["technical_support", "connectivity"],
        outcome: "resolved",
    },
];

/// Filler appended to a transcript to make a body as large as asked.
pub const PADDING_LINE: &str =
    " Caller: Sorry, could you repeat that? Agent: Of course, let me go over it once more.";
