"""Tool-calling conversations in the project's chat format: synthetic, and converted public sets.

  python -m data_pipeline.tool_synth --out_dir data/shards/tools --tokenizer T.model \
      --target_train_tokens 20000000 --target_val_tokens 200000 \
      [--glaive glaive-function-calling-v2.json] [--hermes func-calling-singleturn.json ...]

Synthetic conversations (glaive-like): 1-4 generated function schemas from 14 domains
(weather, finance, travel, lodging, calendar, math, unit conversion, shopping, food,
messaging, translation, health, news, productivity, entertainment) with JSON-Schema
parameters (string, integer, number, boolean, enum, array; required fields), a user request,
an assistant call whose arguments validate against the schema, the tool's response and a
final answer. Also: turns that need no call (unrelated questions, requests no tool can serve,
requests missing required details), several calls (parallel in one turn, or one per turn)
and tool errors. Every call is checked with chat_format.validate_tool_call before it is
written; a failure is counted and the conversation dropped. With --rename_share S, a share S
of the synthetic train/val conversations offer their functions and parameters under generated
names (`lookup_parcel(zone, ref_slot)`; with --rename_words invented, made-up words such as
`tavoki_remu(bafe, lodu_kiv)`), so the call has to be read off the offered schema rather than
remembered; the held-out eval keeps the real names. --max_offered N (default 4) and
--schema_detail names (no descriptions) shorten what is offered, so with one function the name
a call copies is some 50 tokens back: a short-range stage for that copy. --name_weight W weighs
the tokens that spell each call's function name W in the loss (as --answer_weight does a key).
With --generated_share S, a share S of them offer functions generated afresh for the
conversation, whose name, description, parameters and request are spelt from the same words
(`check_parcel_status(parcel_id)`, "What is the status of parcel P-4821?"; up to two more
parameters: a number with its unit, a choice among values, a quoted text): the wanted
function is found by matching the request's words to a schema, not by remembering which
request wants which function; eval_generated.jsonl then asks 'eval_examples' fresh ones.
--rename_words invented makes their words made up too (verb, noun, attribute, parameters);
--rename_words pieces joins one or two of the tokenizer's letter pieces instead.
--generated_apart_share P spells a share P of the generated names from other words than
their request's (`ship_ledger(ledger_id)` described as "Check the status of a parcel"), so a
call cannot be composed from the request's words and must copy the name off the schema.
--generated_id_share Q gives only a share Q of them an id parameter; the others take values
only (a number with its unit, a choice, a quoted text), as most real functions do.

Converters for the public sets (also used by data_pipeline.sft):
  glaive-function-calling-v2  JSON array of {system, chat}; calls are
      `<functioncall> {"name": ..., "arguments": '<json string>'}`; survives rows with two
      blank lines instead of three, text before `<functioncall>`, a function declared twice,
      and a trailing user turn (dropped: it has nothing to learn).
  hermes-function-calling-v1  ShareGPT conversations; tools in `<tools>` of the system turn,
      calls in `<tool_call>` as Python dict literals, responses in `<tool_response>`.
Records that fail (bad call payload, call not matching the offered schema, no assistant turn)
are skipped and counted by reason; --strict stops at the first one, naming file and record.

Loss is on assistant turns only (chat_format.encode_conversation). Conversations are packed
into seq_len-token slots (builder_utils.WindowPacker) so none is cut by a reader window.
Sources mix by weight (--synthetic_weight, --glaive_weight, --hermes_weight); a real file
runs out after one pass. Held-out prompts for the tool-use eval go to --eval_out (default
DIR/eval.jsonl): {"messages": [...up to the user turn], "tools": [...], "expected":
"call"|"no_call", "expected_name": str|null, "expected_arguments": dict|null}. Its prompts offer
only the --heldout_functions schemas (default HELDOUT_FUNCTIONS: four whole domains), which the
train and val splits never offer (a real record that offers one is skipped); the same kind of
prompts on the training schemas go to eval_seen.jsonl beside it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import json
import os
import re
import string
from typing import Any, Callable

import numpy as np

from data_pipeline import builder_utils as bu
from jaxlm.data import chat_format, shards
from jaxlm.data.tokenizer import load_tokenizer

# ----------------------------------------------------------------------------------------------
# Value pools

CITIES = ["Oslo", "Lisbon", "Nairobi", "Kyoto", "Lima", "Toronto", "Melbourne", "Reykjavik",
          "Seoul", "Cairo", "Vienna", "Santiago", "Hanoi", "Dublin", "Denver", "Marrakesh"]
AIRPORTS = {"OSL": "Oslo", "LIS": "Lisbon", "NBO": "Nairobi", "KIX": "Osaka", "LIM": "Lima",
            "YYZ": "Toronto", "MEL": "Melbourne", "KEF": "Reykjavik", "ICN": "Seoul",
            "CAI": "Cairo", "VIE": "Vienna", "DUB": "Dublin", "DEN": "Denver", "JFK": "New York"}
CURRENCIES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.2, "CHF": 0.88, "CAD": 1.36,
              "AUD": 1.52, "SEK": 10.4, "NOK": 10.6, "INR": 83.1, "BRL": 4.97}
STOCKS = {"AAPL": 189.3, "MSFT": 415.2, "NVDA": 880.1, "AMZN": 178.4, "IBM": 190.6,
          "ORCL": 125.7, "SAP": 182.0, "ASML": 960.3, "TSLA": 175.8, "KO": 60.1}
PRODUCTS = ["wireless headphones", "hiking boots", "a standing desk", "an espresso machine",
            "a rain jacket", "a mechanical keyboard", "a yoga mat", "a cast iron pan",
            "a backpack", "a desk lamp", "running shoes", "a water bottle"]
CUISINES = ["italian", "japanese", "mexican", "indian", "thai", "ethiopian", "french", "korean"]
LANGUAGES = ["French", "Spanish", "German", "Japanese", "Portuguese", "Italian", "Korean"]
PHRASES = ["Where is the train station?", "Thank you for your help.", "The meeting starts at nine.",
           "I would like a table for two.", "How much does this cost?", "Good morning, everyone."]
NAMES = ["alex", "maria", "kenji", "amara", "lucas", "priya", "noor", "sven", "ines", "tomas"]
DOMAINS = ["example.com", "mail.example.org", "company.example.net"]
TOPICS = ["technology", "science", "sports", "business", "health", "climate"]
GENRES = ["comedy", "drama", "science fiction", "documentary", "thriller", "animation"]
EVENTS = ["Team sync", "Dentist appointment", "Project review", "Lunch with Sam",
          "Quarterly planning", "Yoga class", "Parent-teacher meeting"]
TODOS = ["renew the passport", "buy groceries", "call the plumber", "submit the expense report",
         "water the plants", "book the car service"]
CONDITIONS = ["sunny", "cloudy", "light rain", "snow", "windy", "foggy", "clear"]
LENGTH_UNITS = {"meters": 1.0, "kilometers": 1000.0, "miles": 1609.344, "feet": 0.3048,
                "inches": 0.0254}
MASS_UNITS = {"kilograms": 1.0, "grams": 0.001, "pounds": 0.45359237, "ounces": 0.028349523}


def _date(rng) -> str:
  return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng) -> str:
  return f"{rng.randint(7, 19):02d}:{rng.choice(['00', '15', '30', '45'])}"


def _email(rng) -> str:
  return f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}"


def _money(x: float) -> str:
  return f"{x:,.2f}"


# ----------------------------------------------------------------------------------------------
# Function library


@dataclasses.dataclass
class Param:
  name: str
  schema: dict
  draw: Callable  # rng -> value (or rng, drawn_so_far -> value when `needs_args`)
  say: Callable = str  # how the user mentions the value
  needs_args: bool = False


@dataclasses.dataclass
class Function:
  domain: str
  name: str
  description: str
  params: list[Param]
  required: list[str]
  requests: list[str]  # templates; placeholders name parameters; every required one appears
  respond: Callable  # (args, rng) -> result dict
  answer: Callable  # (args, result) -> final answer text
  missing_info_request: str = ""  # a request without the required details
  missing_info_reply: str = ""

  def schema(self) -> dict:
    return {"name": self.name, "description": self.description,
            "parameters": {"type": "object",
                           "properties": {p.name: p.schema for p in self.params},
                           "required": list(self.required)}}


def _s(desc, **kw):
  return {"type": "string", "description": desc, **kw}


def _enum(desc, values):
  return {"type": "string", "enum": list(values), "description": desc}


def _convert_units(args):
  table = LENGTH_UNITS if args["from_unit"] in LENGTH_UNITS else MASS_UNITS
  return args["value"] * table[args["from_unit"]] / table[args["to_unit"]]


def _unit_pair(rng, _args):
  table = rng.choice((LENGTH_UNITS, MASS_UNITS))
  return rng.sample(sorted(table), 2)


def _stat(args):
  xs = sorted(args["numbers"])
  m = args["measure"]
  if m == "median":
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
  return {"mean": sum(xs) / len(xs), "max": xs[-1], "min": xs[0], "sum": sum(xs)}[m]


def _loan(args):
  r, n = args["annual_rate"] / 100 / 12, args["years"] * 12
  p = args["principal"]
  return p / n if r == 0 else p * r / (1 - (1 + r) ** -n)


def _fx(args):
  return args["amount"] / CURRENCIES[args["from_currency"]] * CURRENCIES[args["to_currency"]]


LIBRARY: list[Function] = [
    Function(
        "weather", "get_current_weather", "Get the current weather for a city",
        [Param("location", _s("City name, e.g. Oslo"), lambda r: r.choice(CITIES)),
         Param("unit", _enum("Temperature unit", ["celsius", "fahrenheit"]),
               lambda r: r.choice(["celsius", "fahrenheit"]))],
        ["location"],
        ["What's the weather like in {location} right now?",
         "Is it cold in {location} today?",
         "Can you check the current weather in {location} in {unit}?",
         "Tell me the temperature in {location}, in {unit} please."],
        lambda a, r: {"location": a["location"], "temperature": r.randint(-5, 33),
                      "unit": a.get("unit", "celsius"), "condition": r.choice(CONDITIONS)},
        lambda a, res: (f"It is currently {res['temperature']} degrees {res['unit']} in "
                        f"{res['location']}, {res['condition']}."),
        "What's the weather like?", "Sure, which city would you like the weather for?"),
    Function(
        "weather", "get_weather_forecast", "Get a daily weather forecast for a city",
        [Param("location", _s("City name"), lambda r: r.choice(CITIES)),
         Param("days", {"type": "integer", "minimum": 1, "maximum": 7,
                        "description": "Number of days"}, lambda r: r.randint(2, 5))],
        ["location", "days"],
        ["What will the weather be in {location} over the next {days} days?",
         "Give me a {days}-day forecast for {location}."],
        lambda a, r: {"location": a["location"],
                      "forecast": [{"day": d + 1, "high_c": r.randint(0, 30),
                                    "condition": r.choice(CONDITIONS)}
                                   for d in range(a["days"])]},
        lambda a, res: (f"Forecast for {res['location']}: " + "; ".join(
            f"day {f['day']}: {f['condition']}, high {f['high_c']} °C" for f in res["forecast"])
                        + "."),
        "I need a weather forecast.", "Happy to help. For which city, and for how many days?"),
    Function(
        "finance", "get_stock_price", "Get the latest price of a stock by ticker symbol",
        [Param("symbol", _s("Ticker symbol, e.g. AAPL"), lambda r: r.choice(sorted(STOCKS)))],
        ["symbol"],
        ["What's the current price of {symbol}?", "How is {symbol} trading right now?",
         "Look up the stock price for {symbol}."],
        lambda a, r: {"symbol": a["symbol"],
                      "price": round(STOCKS[a["symbol"]] * r.uniform(0.95, 1.05), 2),
                      "currency": "USD"},
        lambda a, res: f"{res['symbol']} is trading at ${_money(res['price'])}.",
        "Can you check a stock price for me?", "Sure, which ticker symbol should I look up?"),
    Function(
        "finance", "convert_currency", "Convert an amount of money between currencies",
        [Param("amount", {"type": "number", "description": "Amount to convert"},
               lambda r: r.choice([r.randint(5, 5000), round(r.uniform(1, 999), 2)])),
         Param("from_currency", _s("ISO currency code to convert from"),
               lambda r: r.choice(sorted(CURRENCIES))),
         Param("to_currency", _s("ISO currency code to convert to"),
               lambda r, a: r.choice([c for c in sorted(CURRENCIES) if c != a["from_currency"]]),
               needs_args=True)],
        ["amount", "from_currency", "to_currency"],
        ["How much is {amount} {from_currency} in {to_currency}?",
         "Convert {amount} {from_currency} to {to_currency}, please.",
         "I have {amount} {from_currency}. What is that in {to_currency}?"],
        lambda a, r: {"converted_amount": round(_fx(a), 2), "currency": a["to_currency"]},
        lambda a, res: (f"{a['amount']} {a['from_currency']} is about "
                        f"{_money(res['converted_amount'])} {res['currency']}."),
        "I want to convert some money.", "Of course. How much, and from which currency to which?"),
    Function(
        "finance", "calculate_loan_payment", "Monthly payment of a fixed-rate loan",
        [Param("principal", {"type": "number", "description": "Loan amount"},
               lambda r: r.randint(5, 500) * 1000),
         Param("annual_rate", {"type": "number", "description": "Annual interest rate in %"},
               lambda r: round(r.uniform(1.5, 9.5), 1)),
         Param("years", {"type": "integer", "description": "Term in years"},
               lambda r: r.choice([5, 10, 15, 20, 25, 30]))],
        ["principal", "annual_rate", "years"],
        ["What would my monthly payment be on a {principal} loan at {annual_rate}% over "
         "{years} years?",
         "Calculate the monthly payment for borrowing {principal} for {years} years at "
         "{annual_rate} percent."],
        lambda a, r: {"monthly_payment": round(_loan(a), 2)},
        lambda a, res: (f"The monthly payment would be {_money(res['monthly_payment'])} "
                        f"over {a['years']} years."),
        "Can you work out a loan payment?",
        "Sure. What is the loan amount, the annual interest rate and the term in years?"),
    Function(
        "travel", "search_flights", "Search flights between two airports on a date",
        [Param("origin", _s("IATA code of the departure airport"),
               lambda r: r.choice(sorted(AIRPORTS))),
         Param("destination", _s("IATA code of the arrival airport"),
               lambda r, a: r.choice([c for c in sorted(AIRPORTS) if c != a["origin"]]),
               needs_args=True),
         Param("date", _s("Departure date, YYYY-MM-DD", format="date"), _date),
         Param("passengers", {"type": "integer", "minimum": 1, "maximum": 9,
                              "description": "Number of passengers"}, lambda r: r.randint(1, 4)),
         Param("cabin", _enum("Cabin class", ["economy", "premium", "business"]),
               lambda r: r.choice(["economy", "premium", "business"]))],
        ["origin", "destination", "date"],
        ["Find me a flight from {origin} to {destination} on {date}.",
         "Are there flights {origin} to {destination} on {date} for {passengers} people?",
         "Search {cabin} flights from {origin} to {destination} on {date}."],
        lambda a, r: {"flights": [{"flight": f"{r.choice(['TP', 'SK', 'LH', 'KL'])}"
                                             f"{r.randint(100, 9999)}",
                                   "departs": _time(r), "price_usd": r.randint(90, 1400)}
                                  for _ in range(r.randint(1, 3))]},
        lambda a, res: (f"I found {len(res['flights'])} option(s) from {a['origin']} to "
                        f"{a['destination']} on {a['date']}: " + "; ".join(
                            f"{f['flight']} at {f['departs']} for ${f['price_usd']}"
                            for f in res["flights"]) + "."),
        "Find me a flight please.", "Sure. From which airport to which, and on what date?"),
    Function(
        "lodging", "book_hotel", "Book a hotel room",
        [Param("city", _s("City"), lambda r: r.choice(CITIES)),
         Param("check_in", _s("Check-in date, YYYY-MM-DD"), _date),
         Param("nights", {"type": "integer", "minimum": 1, "description": "Number of nights"},
               lambda r: r.randint(1, 10)),
         Param("guests", {"type": "integer", "minimum": 1, "description": "Number of guests"},
               lambda r: r.randint(1, 4))],
        ["city", "check_in", "nights"],
        ["Book a hotel in {city} from {check_in} for {nights} nights.",
         "I need a room in {city} for {guests} guests, checking in {check_in}, {nights} nights."],
        lambda a, r: {"confirmation": f"H{r.randint(100000, 999999)}", "city": a["city"],
                      "total_usd": a["nights"] * r.randint(70, 300)},
        lambda a, res: (f"Your hotel in {res['city']} is booked from {a['check_in']} for "
                        f"{a['nights']} night(s). Confirmation {res['confirmation']}, total "
                        f"${res['total_usd']}."),
        "Book me a hotel.", "Happy to. Which city, what check-in date and how many nights?"),
    Function(
        "calendar", "create_calendar_event", "Create an event in the user's calendar",
        [Param("title", _s("Event title"), lambda r: r.choice(EVENTS)),
         Param("date", _s("Date, YYYY-MM-DD"), _date),
         Param("start_time", _s("Start time, HH:MM (24h)"), _time),
         Param("duration_minutes", {"type": "integer", "minimum": 5,
                                    "description": "Length in minutes"},
               lambda r: r.choice([15, 30, 45, 60, 90])),
         Param("attendees", {"type": "array", "items": {"type": "string"},
                             "description": "Email addresses of attendees"},
               lambda r: sorted({_email(r) for _ in range(r.randint(1, 3))}),
               say=lambda v: " and ".join(v))],
        ["title", "date", "start_time"],
        ["Put '{title}' in my calendar on {date} at {start_time}.",
         "Schedule '{title}' on {date} at {start_time} for {duration_minutes} minutes.",
         "Create an event '{title}' on {date} at {start_time} and invite {attendees}."],
        lambda a, r: {"event_id": f"evt_{r.randint(1000, 9999)}", "status": "created"},
        lambda a, res: f"Done: '{a['title']}' is on your calendar for {a['date']} at "
                       f"{a['start_time']}.",
        "Add a meeting to my calendar.", "Sure. What's the title, the date and the start time?"),
    Function(
        "math", "calculate_statistics", "Compute a summary statistic of a list of numbers",
        [Param("numbers", {"type": "array", "items": {"type": "number"}, "minItems": 1,
                           "description": "The numbers"},
               lambda r: [r.randint(1, 200) for _ in range(r.randint(3, 7))],
               say=lambda v: ", ".join(map(str, v))),
         Param("measure", _enum("Statistic", ["mean", "median", "max", "min", "sum"]),
               lambda r: r.choice(["mean", "median", "max", "min", "sum"]))],
        ["numbers", "measure"],
        ["What is the {measure} of {numbers}?", "Compute the {measure} of these: {numbers}."],
        lambda a, r: {"result": round(_stat(a), 4)},
        lambda a, res: f"The {a['measure']} is {res['result']}.",
        "Can you compute a statistic for me?", "Sure. Which numbers, and which statistic?"),
    Function(
        "math", "calculate_percentage", "Compute what percentage one number is of another",
        [Param("part", {"type": "number", "description": "The part"}, lambda r: r.randint(1, 500)),
         Param("whole", {"type": "number", "exclusiveMinimum": 0, "description": "The whole"},
               lambda r, a: a["part"] + r.randint(1, 1000), needs_args=True)],
        ["part", "whole"],
        ["What percentage of {whole} is {part}?", "{part} out of {whole} is what percent?"],
        lambda a, r: {"percentage": round(100 * a["part"] / a["whole"], 2)},
        lambda a, res: f"{a['part']} is {res['percentage']}% of {a['whole']}.",
        "Help me with a percentage.", "Sure. Which part and which whole?"),
    Function(
        "units", "convert_units", "Convert a quantity between units of length or mass",
        [Param("value", {"type": "number", "description": "Quantity"},
               lambda r: r.choice([r.randint(1, 500), round(r.uniform(0.5, 99), 1)])),
         Param("from_unit", _enum("Unit to convert from", list(LENGTH_UNITS) + list(MASS_UNITS)),
               lambda r: None),
         Param("to_unit", _enum("Unit to convert to", list(LENGTH_UNITS) + list(MASS_UNITS)),
               lambda r: None)],
        ["value", "from_unit", "to_unit"],
        ["How many {to_unit} is {value} {from_unit}?", "Convert {value} {from_unit} to {to_unit}."],
        lambda a, r: {"result": round(_convert_units(a), 4), "unit": a["to_unit"]},
        lambda a, res: f"{a['value']} {a['from_unit']} is {res['result']} {res['unit']}.",
        "I need to convert a measurement.", "Sure. What value, and from which unit to which?"),
    Function(
        "shopping", "search_products", "Search an online store's catalogue",
        [Param("query", _s("What to look for"), lambda r: r.choice(PRODUCTS)),
         Param("max_price", {"type": "number", "description": "Highest price in USD"},
               lambda r: r.choice([50, 100, 150, 250, 500])),
         Param("in_stock_only", {"type": "boolean", "description": "Only items in stock"},
               lambda r: True, say=lambda v: "in stock")],
        ["query"],
        ["I'm looking for {query}.", "Find {query} under ${max_price}.",
         "Show me {query} that are {in_stock_only}, under ${max_price}."],
        lambda a, r: {"results": [{"name": f"{a['query'].split()[-1].title()} "
                                           f"{r.choice(['Pro', 'Lite', 'Max', 'One'])}",
                                   "price": round(r.uniform(10, a.get("max_price", 400)), 2),
                                   "in_stock": True} for _ in range(r.randint(1, 3))]},
        lambda a, res: "Here is what I found: " + "; ".join(
            f"{x['name']} at ${_money(x['price'])}" for x in res["results"]) + ".",
        "I want to buy something.", "Sure, what are you looking for?"),
    Function(
        "food", "find_restaurants", "Find restaurants by cuisine in a city",
        [Param("location", _s("City"), lambda r: r.choice(CITIES)),
         Param("cuisine", _enum("Cuisine", CUISINES), lambda r: r.choice(CUISINES)),
         Param("price_range", _enum("Price range", ["$", "$$", "$$$"]),
               lambda r: r.choice(["$", "$$", "$$$"]))],
        ["location", "cuisine"],
        ["Any good {cuisine} restaurants in {location}?",
         "Find a {cuisine} place in {location} in the {price_range} range."],
        lambda a, r: {"restaurants": [{"name": f"{r.choice(['Casa', 'Little', 'Golden', 'Blue'])} "
                                               f"{r.choice(['Garden', 'Table', 'Lantern', 'Fig'])}",
                                       "rating": round(r.uniform(3.5, 4.9), 1)}
                                      for _ in range(r.randint(1, 3))]},
        lambda a, res: (f"Some {a['cuisine']} options in {a['location']}: " + ", ".join(
            f"{x['name']} (rated {x['rating']})" for x in res["restaurants"]) + "."),
        "Recommend a restaurant.", "Sure. In which city, and what kind of food?"),
    Function(
        "messaging", "send_email", "Send an email",
        [Param("to", _s("Recipient email address"), _email),
         Param("subject", _s("Subject line"), lambda r: r.choice(EVENTS)),
         Param("body", _s("Message text"),
               lambda r: r.choice(["See you there.", "Running ten minutes late.",
                                   "Can we move this to next week?", "Agenda attached."]))],
        ["to", "subject", "body"],
        ["Email {to} with the subject '{subject}' saying: {body}",
         "Send {to} a message titled '{subject}': {body}"],
        lambda a, r: {"status": "sent", "message_id": f"m{r.randint(10000, 99999)}"},
        lambda a, res: f"Your email to {a['to']} has been sent.",
        "Send an email for me.", "Sure. To whom, with what subject, and what should it say?"),
    Function(
        "translation", "translate_text", "Translate text into another language",
        [Param("text", _s("Text to translate"), lambda r: r.choice(PHRASES)),
         Param("target_language", _enum("Language to translate into", LANGUAGES),
               lambda r: r.choice(LANGUAGES))],
        ["text", "target_language"],
        ["Translate \"{text}\" into {target_language}.",
         "How do you say \"{text}\" in {target_language}?"],
        lambda a, r: {"translation": f"[{a['target_language']}] {a['text']}"},
        lambda a, res: f"In {a['target_language']}: {res['translation']}",
        "Translate something for me.", "Sure. What text, and into which language?"),
    Function(
        "health", "calculate_bmi", "Calculate body mass index",
        [Param("weight_kg", {"type": "number", "description": "Weight in kilograms"},
               lambda r: r.randint(45, 120)),
         Param("height_m", {"type": "number", "description": "Height in meters"},
               lambda r: round(r.uniform(1.5, 2.0), 2))],
        ["weight_kg", "height_m"],
        ["My weight is {weight_kg} kg and I'm {height_m} m tall. What's my BMI?",
         "Calculate the BMI for {weight_kg} kg at {height_m} m."],
        lambda a, r: {"bmi": round(a["weight_kg"] / a["height_m"] ** 2, 1)},
        lambda a, res: f"Your BMI is {res['bmi']}.",
        "What's my BMI?", "I can calculate it. What are your weight in kg and height in m?"),
    Function(
        "news", "get_news_headlines", "Get the latest headlines on a topic",
        [Param("topic", _enum("Topic", TOPICS), lambda r: r.choice(TOPICS)),
         Param("count", {"type": "integer", "minimum": 1, "maximum": 10,
                         "description": "How many headlines"}, lambda r: r.randint(2, 4))],
        ["topic"],
        ["What's new in {topic}?", "Give me the top {count} {topic} headlines."],
        lambda a, r: {"headlines": [f"{a['topic'].title()} update {i + 1}: report "
                                    f"#{r.randint(100, 999)} published"
                                    for i in range(a.get("count", 3))]},
        lambda a, res: "Latest headlines: " + "; ".join(res["headlines"]) + ".",
        "Tell me the news.", "Sure, which topic are you interested in?"),
    Function(
        "productivity", "add_todo_item", "Add a task to the to-do list",
        [Param("task", _s("What needs doing"), lambda r: r.choice(TODOS)),
         Param("due_date", _s("Due date, YYYY-MM-DD"), _date),
         Param("priority", _enum("Priority", ["low", "medium", "high"]),
               lambda r: r.choice(["low", "medium", "high"]))],
        ["task"],
        ["Remind me to {task}.", "Add '{task}' to my to-do list, due {due_date}.",
         "Add a {priority} priority task: {task}, due {due_date}."],
        lambda a, r: {"item_id": r.randint(1, 999), "status": "added"},
        lambda a, res: f"Added '{a['task']}' to your to-do list.",
        "Add something to my to-do list.", "Sure, what should I add?"),
    Function(
        "entertainment", "search_movies", "Search movies by genre and year",
        [Param("genre", _enum("Genre", GENRES), lambda r: r.choice(GENRES)),
         Param("year", {"type": "integer", "minimum": 1950, "maximum": 2025,
                        "description": "Release year"}, lambda r: r.randint(1980, 2024))],
        ["genre"],
        ["Recommend a {genre} movie.", "Any good {genre} films from {year}?"],
        lambda a, r: {"movies": [f"The {r.choice(['Long', 'Quiet', 'Last', 'Bright'])} "
                                 f"{r.choice(['Road', 'Summer', 'Signal', 'Harbor'])}"
                                 for _ in range(r.randint(1, 3))]},
        lambda a, res: f"You might enjoy: {', '.join(res['movies'])}.",
        "Suggest a movie.", "Sure, what genre do you feel like?"),
]
BY_NAME = {f.name: f for f in LIBRARY}
# Schemas held out of training (whole domains: each is its domain's only function). The
# builder's train and val splits never offer them; its eval.jsonl offers only them, so the
# tool-call validity there is measured on schemas the model never saw. eval_seen.jsonl holds
# prompts on the training schemas, for comparison.
HELDOUT_FUNCTIONS = ("calculate_bmi", "get_news_headlines", "search_movies", "translate_text")


def split_library(heldout) -> tuple[list[Function], list[Function]]:
  """(training functions, held-out functions) for a list of held-out names."""
  unknown = sorted(set(heldout) - set(BY_NAME))
  if unknown:
    raise ValueError(f"--heldout_functions: unknown function(s) {unknown}; choose from "
                     f"{sorted(BY_NAME)}")
  train = [f for f in LIBRARY if f.name not in heldout]
  if len(train) < 4:
    raise ValueError("--heldout_functions leaves fewer than 4 training functions")
  return train, [f for f in LIBRARY if f.name in heldout]

SYSTEM_PROMPTS = [
    "You are a helpful assistant with access to tools. Call a tool when it helps.",
    "You are a helpful assistant. Use the functions below when they are needed to answer.",
    "You can call the following tools. Only call a tool if the request needs it.",
    "",
]
UNSUPPORTED = [("Can you order me a taxi to the airport?", "order taxis"),
               ("Please turn off the living room lights.", "control lights"),
               ("Play some relaxing music.", "play music"),
               ("Can you call my mother?", "make phone calls"),
               ("Pay my electricity bill.", "pay bills")]
SMALL_TALK = [("Thanks, that's all for now!", "You're welcome! Let me know if you need anything "
               "else."),
              ("Hi there!", "Hello! How can I help you today?"),
              ("What can you do?", None)]
ERRORS = ["The service is temporarily unavailable. Please try again later.",
          "Rate limit exceeded.", "Invalid input: {detail}."]


def _draw_args(fn: Function, rng, names: set[str]) -> dict:
  args = {}
  for p in fn.params:
    if p.name not in names:
      continue
    args[p.name] = p.draw(rng, args) if p.needs_args else p.draw(rng)
  if fn.name == "convert_units":
    args["from_unit"], args["to_unit"] = _unit_pair(rng, args)
  return args


def _request(fn: Function, rng) -> tuple[str, dict]:
  template = rng.choice(fn.requests)
  names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
  missing = set(fn.required) - names
  assert not missing, f"{fn.name} request {template!r} lacks required {missing}"
  args = _draw_args(fn, rng, names)
  by = {p.name: p for p in fn.params}
  text = template.format(**{k: by[k].say(v) for k, v in args.items()})
  return text, args


def _call_msg(rng, calls: list[dict]) -> dict:
  lead = rng.choice(["", "", "", "Let me check that for you.", "One moment."])
  return {"role": "assistant", "content": lead, "tool_calls": calls}


def _tool_msg(result: dict) -> dict:
  return {"role": "tool", "content": json.dumps(result, ensure_ascii=False)}


def synthesize(rng, library: list[Function] | None = None, max_offered: int = 4
               ) -> tuple[list[dict], list[dict], dict]:
  """One synthetic conversation: (messages, tools, eval facts about the first user turn).

  The offered functions (1 to max_offered) are drawn from `library` (default: all of
  LIBRARY)."""
  library = LIBRARY if library is None else library
  kind = rng.choices(["single", "parallel", "sequential", "error", "no_call"],
                     [45, 12, 13, 10, 20])[0]
  offered = rng.sample(library, rng.randint(1, min(max_offered, len(library))))
  main = offered[0]
  rng.shuffle(offered)
  tools = [f.schema() for f in offered]
  messages = []
  system = rng.choice(SYSTEM_PROMPTS)
  if system:
    messages.append({"role": "system", "content": system})
  facts = {"expected": "call", "expected_name": main.name, "expected_arguments": None}
  if kind == "no_call":
    facts = {"expected": "no_call", "expected_name": None, "expected_arguments": None}
    flavour = rng.choice(["arithmetic", "unsupported", "small_talk", "missing_info"])
    if flavour == "arithmetic":
      a, b = rng.randint(2, 99), rng.randint(2, 99)
      op, f = rng.choice([("plus", a + b), ("times", a * b), ("minus", a - b)])
      messages += [{"role": "user", "content": f"What is {a} {op} {b}?"},
                   {"role": "assistant", "content": f"{a} {op} {b} is {f}."}]
    elif flavour == "unsupported":
      ask, what = rng.choice(UNSUPPORTED)
      can = " and ".join(f.description[0].lower() + f.description[1:] for f in offered[:2])
      messages += [{"role": "user", "content": ask},
                   {"role": "assistant", "content": f"Sorry, I can't {what} with the tools I "
                                                    f"have. I can {can}."}]
    elif flavour == "small_talk":
      ask, reply = rng.choice(SMALL_TALK)
      reply = reply or ("I can help with: " + "; ".join(f.description.lower() for f in offered)
                        + ".")
      messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": reply}]
    else:
      messages += [{"role": "user", "content": main.missing_info_request},
                   {"role": "assistant", "content": main.missing_info_reply}]
      facts["expected_name"] = None
    return messages, tools, facts
  text, args = _request(main, rng)
  facts["expected_arguments"] = args
  if kind == "parallel":
    text2, args2 = _request(main, rng)
    messages.append({"role": "user", "content": f"{text} Also: {text2[0].lower()}{text2[1:]}"})
    results = [main.respond(args, rng), main.respond(args2, rng)]
    messages.append(_call_msg(rng, [{"name": main.name, "arguments": args},
                                    {"name": main.name, "arguments": args2}]))
    messages += [_tool_msg(r) for r in results]
    messages.append({"role": "assistant", "content": main.answer(args, results[0]) + " "
                     + main.answer(args2, results[1])})
    return messages, tools, facts
  messages.append({"role": "user", "content": text})
  messages.append(_call_msg(rng, [{"name": main.name, "arguments": args}]))
  if kind == "error":
    detail = f"{next(iter(args))} {json.dumps(next(iter(args.values())))} was not recognised"
    error = rng.choice(ERRORS).format(detail=detail)
    messages.append(_tool_msg({"error": error}))
    messages.append({"role": "assistant", "content": f"Sorry, that didn't work: {error} "
                     "Would you like me to try again, or change the request?"})
    return messages, tools, facts
  result = main.respond(args, rng)
  messages.append(_tool_msg(result))
  messages.append({"role": "assistant", "content": main.answer(args, result)})
  if kind == "sequential":
    second = rng.choice(offered)
    text2, args2 = _request(second, rng)
    result2 = second.respond(args2, rng)
    messages += [{"role": "user", "content": text2},
                 _call_msg(rng, [{"name": second.name, "arguments": args2}]),
                 _tool_msg(result2),
                 {"role": "assistant", "content": second.answer(args2, result2)}]
  return messages, tools, facts


# ----------------------------------------------------------------------------------------------
# Generated names: a model that sees 15 functions learns their names, not to read the schemas it
# is offered (it then calls a training function whatever the tools). With --rename_share, that
# share of synthetic conversations gives its functions and parameters fresh names, consistently in
# the schemas, the calls and the eval facts, so the call can only be written by copying names from
# the offered schema. No word of a held-out function's or parameter's name is used (tests check).
# --rename_words picks the words: "fixed" draws them from the short lists below, whose 600
# function names a small model learns and then guesses among (the CPU bridge's wrote
# `scan_mileage` for a held-out `calculate_bmi`); "invented" makes every part a pronounceable
# made-up word (`tavoki_remu`) that no prior predicts, so the name can only be copied, piece
# by piece, from the schema, which is what an unseen schema asks; "pieces" joins one or two of
# the tokenizer's letter pieces (`anslate_mo`), so the copied pieces spread over the vocabulary
# as real names' do (the made-up words use a few syllable pieces only).

RENAME_WORDS = ("fixed", "invented", "pieces")

_NAME_VERBS = ("fetch", "lookup", "compute", "check", "list", "create", "send", "book", "convert",
               "find", "estimate", "query", "resolve", "load", "plan", "record", "schedule",
               "quote", "scan", "track")
_NAME_NOUNS = ("ledger", "parcel", "voucher", "invoice", "route", "shift", "badge", "permit",
               "harvest", "cargo", "tariff", "meter", "venue", "roster", "fleet", "quota",
               "signal", "archive", "ticketing", "rental", "forecast", "inventory", "payroll",
               "mileage", "storage", "dosage", "transit", "warranty", "booking", "rate")
_PARAM_WORDS = ("amount", "code", "ref", "slot", "mode", "tier", "zone", "handle", "scope",
                "label", "origin", "limit", "span", "unit", "place", "when", "size",
                "kind", "level", "group", "owner", "value", "range", "key", "note", "window")


def _invented_word(rng, avoid: frozenset, pieces: tuple[str, ...] = ()) -> str:
  while True:
    word = ("".join(rng.choice(pieces) for _ in range(rng.randint(1, 2))) if pieces
            else bu.pseudo_word(rng, rng.randint(3, 7)))
    if word not in avoid:
      return word


@dataclasses.dataclass(frozen=True)
class NameWords:
  """Where renamed and generated names take their words (--rename_words): the fixed lists;
  made-up words; or one or two of the tokenizer's own word pieces joined (`pieces`), so that
  the names a model copies spread over the whole vocabulary, as unseen real names do, instead
  of a few dozen words it can learn to recognise."""
  kind: str = "fixed"
  pieces: tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in RENAME_WORDS:
      raise ValueError(f"--rename_words {self.kind!r}: choose from {RENAME_WORDS}")
    if (self.kind == "pieces") != bool(self.pieces):
      raise ValueError("--rename_words pieces takes its words from the tokenizer's pieces "
                       "(and only it does)")

  @property
  def made_up(self) -> bool:
    return self.kind != "fixed"

  def word(self, rng, avoid: frozenset) -> str:
    return _invented_word(rng, avoid, self.pieces)


def as_name_words(words) -> NameWords:
  return words if isinstance(words, NameWords) else NameWords(words)


def tokenizer_word_pieces(tok) -> tuple[str, ...]:
  """The tokenizer's pieces that are two or more lowercase letters (word starts and word
  parts alike), in vocabulary order."""
  out = []
  for i in range(tok.vocab_size):
    piece = tok.sp.IdToPiece(i).lstrip("\u2581")
    if len(piece) >= 2 and piece.isascii() and piece.isalpha() and piece.islower():
      out.append(piece)
  return tuple(dict.fromkeys(out))


def name_words(functions: list[Function]) -> frozenset:
  """Every word of these functions' names and parameter names (split at underscores)."""
  words = set()
  for f in functions:
    words.update(f.name.split("_"))
    for p in f.params:
      words.update(p.name.split("_"))
  return frozenset(words)


def _fresh_name(rng, parts: tuple[tuple[str, ...], ...], used: set, words: NameWords,
                avoid: frozenset) -> str:
  while True:
    if words.made_up:
      name = "_".join(words.word(rng, avoid) for _ in parts)
    else:
      name = "_".join(rng.choice(pool) for pool in parts)
    if name not in used:
      used.add(name)
      return name


def rename_functions(rng, messages: list[dict], tools: list[dict], facts: dict,
                     words: str | NameWords = "fixed", avoid: frozenset = frozenset()
                     ) -> tuple[list[dict], list[dict], dict]:
  """The conversation with every offered function and parameter under a generated name
  (words: one of RENAME_WORDS, or NameWords; avoid: words a made-up name must not use)."""
  words = as_name_words(words)
  fn_names, used = {}, set()
  params: dict[str, dict[str, str]] = {}
  for tool in tools:
    fn_names[tool["name"]] = _fresh_name(rng, (_NAME_VERBS, _NAME_NOUNS), used, words, avoid)
    taken: set = set()
    params[tool["name"]] = {
        p: _fresh_name(rng, (_PARAM_WORDS,) if rng.random() < 0.5 else
                       (_PARAM_WORDS, _PARAM_WORDS), taken, words, avoid)
        for p in tool["parameters"]["properties"]}

  def schema(tool):
    names = params[tool["name"]]
    spec = tool["parameters"]
    return {**tool, "name": fn_names[tool["name"]],
            "parameters": {**spec, "properties": {names[k]: v for k, v in
                                                  spec["properties"].items()},
                           "required": [names[k] for k in spec["required"]]}}

  def call(c):
    names = params[c["name"]]
    return {"name": fn_names[c["name"]],
            "arguments": {names[k]: v for k, v in c["arguments"].items()}}

  out = [{**m, "tool_calls": [call(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m
         for m in messages]
  facts = dict(facts)
  if facts.get("expected_name"):
    names = params[facts["expected_name"]]
    if facts.get("expected_arguments") is not None:
      facts["expected_arguments"] = {names[k]: v for k, v in facts["expected_arguments"].items()}
    facts["expected_name"] = fn_names[facts["expected_name"]]
  return out, [schema(t) for t in tools], facts


# ----------------------------------------------------------------------------------------------
# Generated functions (--generated_share): renamed functions keep the library's requests, so a
# model learns which request wants which of 15 functions and, asked something new, declines
# (the GPU bridge answered every held-out request with a no-call reply, RESULTS.md). A generated
# function is new in every conversation: its name, description and parameters are spelt from
# the same few words its request uses (`check_parcel_status`, "Check the status of a parcel",
# `parcel_id`; "What is the status of parcel P-4821?"), and the other offered functions use
# other words, so the call can only be written by matching the request's words to a schema and
# copying its names.

_GEN_ATTRS = ("status", "price", "owner", "size", "location", "deadline", "capacity", "rating",
              "balance", "colour", "length", "version", "priority", "distance", "score")
_GEN_UNITS = ("km", "usd", "days", "hours", "litres", "pct", "tons", "seats")
# The words every generated request is written with, besides its function's.
_REQUEST_WORDS = frozenset(("what", "is", "the", "of", "can", "you", "for", "with", "need",
                            "please", "also"))
_GEN_VALUES = ("red", "green", "north", "south", "basic", "premium", "express", "standard",
               "small", "large", "daily", "weekly", "open", "closed", "urgent", "spare")


def _generated_params(rng, noun: str, id_word: str, avoid: frozenset, words: NameWords,
                      has_id: bool = True) -> list[tuple[Param, str]]:
  """One to three parameters, each with the words that mention its value in a request, as a
  real request does ("{weight_kg} kg", "a {genre} movie", '"{text}"'): an id of the noun
  (named `{id_word}_id`) first if `has_id`, then a number with its unit, a choice among
  values, or a quoted text."""
  out = []
  if has_id:
    pid = f"{id_word}_id"
    out.append((Param(pid, _s(f"Identifier of the {noun}"),
                      lambda r: f"{r.choice('ABCDEFGHKMNPRSTUVWXZ')}-{r.randint(100, 9999)}"),
                f"{noun} {{{pid}}}"))
  pool = [w for w in _PARAM_WORDS if w not in avoid]
  for kind in rng.sample(("number", "choice", "text"),
                         rng.randint(0, 2) if has_id else rng.randint(1, 3)):
    taken = {q.name for q, _ in out}
    word = (words.word(rng, avoid | taken) if words.made_up
            else rng.choice([w for w in pool if w not in taken]))
    if kind == "number":
      unit = rng.choice([u for u in _GEN_UNITS if u not in avoid])
      name = f"{word}_{unit}"
      out.append((Param(name, {"type": "integer", "description": f"{word.capitalize()} in "
                                                                 f"{unit}"},
                        lambda r: r.randint(2, 500)), f"{{{name}}} {unit}"))
    elif kind == "choice":
      values = rng.sample(_GEN_VALUES, rng.randint(3, 5))
      out.append((Param(word, _enum(word.capitalize(), values),
                        lambda r, v=tuple(values): r.choice(v)), f"{{{word}}}"))
    else:
      out.append((Param(word, _s(f"The {word} text"),
                        lambda r: " ".join(bu.pseudo_word(r, r.randint(3, 6))
                                           for _ in range(r.randint(1, 3)))),
                  f'"{{{word}}}"'))
  return out


def generated_function(rng, nouns: set, avoid: frozenset, words: str | NameWords = "fixed",
                       apart_share: float = 0.0, id_share: float = 1.0) -> Function:
  """A fresh function whose description, parameters and requests share its words (`nouns`:
  nouns the other offered functions use; `avoid`: held-out name words; `words`: one of
  RENAME_WORDS or a NameWords: the fixed lists, or made-up words or tokenizer pieces, so that
  no piece of the name can be drawn from a list the model has learned, the verb included).
  Its name is spelt from the same words, or, with probability `apart_share`, from two or three
  other words that no request states, so the name can only be copied from the schema the
  request's words pick (as `get_news_headlines` is for "What's new in science?"). With
  probability 1 - `id_share` it takes no id of its noun, only values (as
  `calculate_bmi(weight_kg, height_m)` does)."""
  words = as_name_words(words)

  def draw(pool, taken):
    if words.made_up:
      return words.word(rng, avoid | taken)
    return rng.choice([w for w in pool if w not in taken and w not in avoid])

  verb = draw(_NAME_VERBS, nouns)
  noun = draw(_NAME_NOUNS, nouns | {verb})
  attr = draw(_GEN_ATTRS, nouns | {verb, noun})
  nouns.add(noun)
  name_words = (verb, noun, attr)
  # No draw without apart_share, so shards built before it stay as they were.
  if apart_share > 0 and rng.random() < apart_share:
    taken = nouns | {verb, attr} | _REQUEST_WORDS | set(_GEN_UNITS) | set(_GEN_VALUES)
    name_words = (draw(_NAME_VERBS, taken), draw(_NAME_NOUNS, taken))
    if rng.random() < 0.5:
      name_words += (draw(_GEN_ATTRS, taken | set(name_words)),)
    nouns.add(name_words[1])
  # No draw without id_share < 1, so shards built before it stay as they were.
  has_id = id_share >= 1.0 or rng.random() < id_share
  params = _generated_params(rng, noun, name_words[1], avoid, words, has_id)
  mentions = [m for _, m in params]
  target, extras = (mentions[0], mentions[1:]) if has_id else (f"the {noun}", mentions)
  with_extras = f" with {', '.join(extras)}" if extras else ""
  requests = [f"What is the {attr} of {target}{with_extras}?",
              f"Can you {verb} the {attr} for {target}{with_extras}?",
              f"I need the {attr} of {target}{with_extras}.",
              f"{verb.capitalize()} the {attr} of {target}{with_extras}, please."]
  first = params[0][0].name
  return Function(
      "generated", "_".join(name_words), f"{verb.capitalize()} the {attr} of a {noun}",
      [p for p, _ in params], [p.name for p, _ in params], requests,
      lambda a, r: {attr: f"{r.randint(2, 999)}"},
      lambda a, res: (f"The {attr} of {noun} {a[first]} is {res[attr]}." if has_id
                      else f"The {attr} of the {noun} is {res[attr]}."),
      f"What is the {attr} of my {noun}?",
      f"Sure, which {noun}? Please give me its id." if has_id
      else f"Sure, what {first.replace('_', ' ')} should I use?")


def generated_library(rng, count: int, avoid: frozenset, words: str | NameWords = "fixed",
                      apart_share: float = 0.0, id_share: float = 1.0) -> list[Function]:
  """`count` generated functions with different nouns (one conversation's offer)."""
  nouns: set = set()
  return [generated_function(rng, nouns, avoid, words, apart_share, id_share)
          for _ in range(count)]


# ----------------------------------------------------------------------------------------------
# Checking calls


def call_problems(messages: list[dict], tools: list[dict]) -> list[str]:
  """Problems of every call as rendered, checked with chat_format.validate_tool_call."""
  problems = []
  for m in messages:
    if m.get("role") == "assistant" and m.get("tool_calls"):
      text = "".join(chat_format.format_tool_call(c["name"], c["arguments"])
                     for c in m["tool_calls"])
      for payload in chat_format.parse_assistant_output(text)["tool_calls"]:
        try:
          problems += chat_format.validate_tool_call(payload, tools)
        except Exception as e:  # jsonschema rejects a malformed schema itself
          problems.append(f"schema error: {type(e).__name__}: {e}")
  return problems


def _tool_schema(obj: Any) -> dict:
  """A function description in our shape: {name, description, parameters}."""
  if isinstance(obj, dict) and obj.get("type") == "function" and isinstance(obj.get("function"),
                                                                            dict):
    obj = obj["function"]
  if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
    raise bu.SkipRecord("bad_tool_schema", "a tool without a string name")
  out = {"name": obj["name"], "description": obj.get("description", "")}
  params = obj.get("parameters")
  out["parameters"] = params if isinstance(params, dict) else {"type": "object",
                                                               "properties": {}}
  return out


def _dedupe_tools(tools: list[dict]) -> list[dict]:
  seen, out = set(), []
  for t in tools:
    if t["name"] not in seen:  # glaive sometimes declares a function twice
      seen.add(t["name"])
      out.append(t)
  return out


def _finish(messages: list[dict], tools: list[dict]) -> tuple[list[dict], list[dict]]:
  while messages and messages[-1]["role"] != "assistant":
    messages.pop()  # a trailing user/tool turn has no assistant reply to learn
  if not any(m["role"] == "assistant" for m in messages):
    raise bu.SkipRecord("no_assistant_turn")
  problems = call_problems(messages, tools)
  if problems:
    raise bu.SkipRecord("call_fails_schema", problems[0][:200])
  return messages, tools


# ----------------------------------------------------------------------------------------------
# glaive-function-calling-v2


_GLAIVE_TURN = re.compile(r"(?:^|\n+)\s*(USER|ASSISTANT|FUNCTION RESPONSE):\s?")
_GLAIVE_CALL = re.compile(r'^\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"arguments"\s*:\s*\'(.*)\'\s*\}$',
                          re.S)


def _json_objects(text: str) -> list[dict]:
  """Every top-level JSON object in text (glaive lists functions one after another)."""
  decoder, out, i = json.JSONDecoder(), [], 0
  while True:
    i = text.find("{", i)
    if i < 0:
      return out
    try:
      obj, end = decoder.raw_decode(text, i)
    except json.JSONDecodeError:
      raise bu.SkipRecord("bad_function_schema_json", text[i:i + 60]) from None
    out.append(obj)
    i = end


def parse_glaive_call(payload: str) -> dict:
  payload = payload.replace("<|endoftext|>", "").strip()
  m = _GLAIVE_CALL.match(payload)
  try:
    if m:
      name, args = m.group(1), json.loads(m.group(2)) if m.group(2).strip() else {}
    else:  # some rows carry the arguments as an object, not a quoted string
      obj = json.loads(payload)
      name, args = obj["name"], obj.get("arguments", {})
      if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
  except (json.JSONDecodeError, KeyError, TypeError):
    raise bu.SkipRecord("bad_function_call_json", payload[:80]) from None
  if not isinstance(args, dict):
    raise bu.SkipRecord("bad_function_call_json", "arguments are not an object")
  return {"name": name, "arguments": args}


def convert_glaive(record: Any) -> tuple[list[dict], list[dict]]:
  """A glaive-function-calling-v2 record {system, chat} -> (messages, tools)."""
  if not isinstance(record, dict) or not isinstance(record.get("chat"), str):
    raise bu.SkipRecord("bad_record_schema", "expected {system, chat} strings")
  system = (record.get("system") or "").strip()
  system = re.sub(r"^SYSTEM:\s*", "", system)
  brace = system.find("{")
  tools = []
  if brace >= 0:
    tools = _dedupe_tools([_tool_schema(t) for t in _json_objects(system[brace:])])
    system = system[:brace].strip().rstrip("-").strip()
  messages = [{"role": "system", "content": system}] if system else []
  parts = _GLAIVE_TURN.split(record["chat"])
  for role, text in zip(parts[1::2], parts[2::2]):
    text = text.replace("<|endoftext|>", "").strip()
    if role == "USER":
      messages.append({"role": "user", "content": text})
    elif role == "FUNCTION RESPONSE":
      messages.append({"role": "tool", "content": text})
    elif "<functioncall>" in text:
      before, payload = text.split("<functioncall>", 1)
      messages.append({"role": "assistant", "content": before.strip(),
                       "tool_calls": [parse_glaive_call(payload)]})
    else:
      messages.append({"role": "assistant", "content": text})
  return _finish(messages, tools)


# ----------------------------------------------------------------------------------------------
# hermes-function-calling-v1


_HERMES_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                 "assistant": "assistant", "tool": "tool", "function": "tool"}
_TAG = lambda name: re.compile(rf"<{name}>(.*?)</{name}>", re.S)  # noqa: E731


def _literal(text: str, reason: str) -> Any:
  text = text.strip()
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    pass
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, MemoryError, RecursionError):
    raise bu.SkipRecord(reason, text[:80]) from None


def convert_hermes(record: Any) -> tuple[list[dict], list[dict]]:
  """A hermes-function-calling-v1 ShareGPT record -> (messages, tools)."""
  conv = record.get("conversations") if isinstance(record, dict) else None
  if not isinstance(conv, list):
    raise bu.SkipRecord("bad_record_schema", "no 'conversations' list")
  messages, tools = [], []
  for turn in conv:
    if not isinstance(turn, dict) or turn.get("from") not in _HERMES_ROLES:
      raise bu.SkipRecord("unknown_role", str(turn.get("from") if isinstance(turn, dict)
                                              else turn)[:40])
    role, value = _HERMES_ROLES[turn["from"]], turn.get("value") or ""
    if role == "system":
      # The prompt names the tags in prose ("within <tools></tools> XML tags") before the
      # real block, so take the last non-empty block.
      blocks = [b for b in _TAG("tools").findall(value) if b.strip()]
      if blocks:
        listed = _literal(blocks[-1], "bad_tools_literal")
        listed = listed if isinstance(listed, list) else [listed]
        tools = _dedupe_tools([_tool_schema(t) for t in listed])
        # The original instructions describe another call syntax (ours is chat_format's):
        # keep only the persona sentence before them.
        value = re.split(r"\s*You are provided with function signatures|\s*<tools>", value)[0]
      messages.append({"role": "system", "content": value.strip()})
    elif role == "assistant":
      calls = []
      for payload in _TAG("tool_call").findall(value):
        obj = _literal(payload, "bad_tool_call_literal")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
          raise bu.SkipRecord("bad_tool_call_literal", str(obj)[:80])
        args = obj.get("arguments", {})
        if isinstance(args, str):
          args = _literal(args, "bad_tool_call_literal") if args.strip() else {}
        calls.append({"name": obj["name"], "arguments": args})
      content = _TAG("tool_call").sub("", value).strip()
      msg = {"role": "assistant", "content": content}
      if calls:
        msg["tool_calls"] = calls
      messages.append(msg)
    elif role == "tool":
      responses = _TAG("tool_response").findall(value) or [value]
      messages += [{"role": "tool", "content": r.strip()} for r in responses]
    else:
      messages.append({"role": "user", "content": value})
  return _finish(messages, tools)


CONVERTERS = {"glaive": convert_glaive, "hermes": convert_hermes}


# ----------------------------------------------------------------------------------------------
# Builder


def make_worker_state(arg) -> dict:
  train, heldout = split_library(arg.get("heldout", ()))
  tok = load_tokenizer(arg["tokenizer"])
  kind = arg.get("rename_words", "fixed")
  return {"cfg": arg, "tokenizer": tok, "train_library": train,
          "heldout_library": heldout or train, "heldout_words": name_words(heldout),
          "name_words": NameWords(kind, tokenizer_word_pieces(tok) if kind == "pieces" else ())}


# --name_weight W: the tokens that spell a call's function name weigh W in the loss, as
# longctx_hard's --answer_weight does for a key. The name is the part of a call that has to be
# copied from the offered schema, and it is a few of the many assistant tokens the loss counts.
# What chat_format writes between the call marker and the name (`{"name": "`).
_CALL_TEMPLATE = chat_format.format_tool_call("NAME", {})
_CALL_HEAD = _CALL_TEMPLATE[len(chat_format.TOOL_CALL_OPEN):_CALL_TEMPLATE.index("NAME")]


def weight_call_names(tok, ids: list[int], weights: list[int], weight: int) -> list[int]:
  """`weights` with `weight` on every trained token that overlaps a call's function name."""
  if weight == 1:
    return weights
  weights = list(weights)
  open_id = tok.special_id(chat_format.TOOL_CALL_OPEN)
  for start, (token, w) in enumerate(zip(ids, weights)):
    if token != open_id or not w:
      continue
    text = tok.decode(ids[start + 1:start + 1 + 64])
    if not text.startswith(_CALL_HEAD) or '"' not in text[len(_CALL_HEAD):]:
      continue  # not a call in chat_format's form (a converted record's oddity): left as is
    name_end = text.index('"', len(_CALL_HEAD))
    covered = 0  # characters decoded so far after the marker
    for k in range(start + 1, len(ids)):
      if covered >= name_end:
        break
      now = len(tok.decode(ids[start + 1:k + 1]))
      if now > len(_CALL_HEAD) and weights[k]:
        weights[k] = weight
      covered = now
  return weights


def _encode(messages, tools, source) -> bu.Document:
  tok = bu.worker_state()["tokenizer"]
  ids, weights = chat_format.encode_conversation(tok, messages, tools)
  weights = weight_call_names(tok, ids, weights, bu.worker_state()["cfg"].get("name_weight", 1))
  return bu.Document(np.asarray(ids, np.int32), np.asarray(weights, np.uint8), source)


def _too_long(doc: bu.Document, where: str):
  cfg = bu.worker_state()["cfg"]
  if cfg["seq_len"] and doc.num_tokens > cfg["seq_len"]:
    return bu.Skipped("longer_than_seq_len", where, doc.num_tokens)
  return doc


# --schema_detail names offers each function as its name and typed parameters only, without
# the descriptions (the library's schemas shrink to about two thirds of their tokens); with
# --max_offered 1 the name a call copies is then some 50 tokens back. A short-range stage for
# that copy, as phase2b is for the passkey's.
SCHEMA_DETAILS = ("full", "names")


def names_only(tool: dict) -> dict:
  """A function schema without its own or its parameters' descriptions."""
  spec = tool["parameters"]
  props = {k: {f: v for f, v in p.items() if f != "description"}
           for k, p in spec["properties"].items()}
  return {"name": tool["name"], "parameters": {**spec, "properties": props}}


def _synthetic_item(item):
  split, index = item
  cfg = bu.worker_state()["cfg"]
  rng = bu.doc_rng(cfg["seed"], "tools", split, index)
  # No draw without --generated_share, so the default shards stay as they were.
  share = cfg.get("generated_share", 0.0)
  if share > 0 and rng.random() < share:
    library = generated_library(rng, cfg.get("max_offered", 4),
                                bu.worker_state()["heldout_words"],
                                bu.worker_state()["name_words"],
                                cfg.get("generated_apart_share", 0.0),
                                cfg.get("generated_id_share", 1.0))
    messages, tools, facts = synthesize(rng, library, cfg.get("max_offered", 4))
  else:
    messages, tools, facts = synthesize(rng, bu.worker_state()["train_library"],
                                        cfg.get("max_offered", 4))
    if rng.random() < cfg.get("rename_share", 0.0):
      messages, tools, _ = rename_functions(rng, messages, tools, facts,
                                            bu.worker_state()["name_words"],
                                            bu.worker_state()["heldout_words"])
  if cfg.get("schema_detail", "full") == "names":
    tools = [names_only(t) for t in tools]
  problems = call_problems(messages, tools)
  if problems:
    return bu.Skipped("invalid_synthetic_call", problems[0])
  return _too_long(_encode(messages, tools, "tools/synthetic"), f"synthetic {split} #{index}")


def _real_item(item):
  source, where, record = item
  if isinstance(record, Exception):
    return bu.Skipped("bad_json", str(record))
  try:
    messages, tools = CONVERTERS[source](record)
  except bu.SkipRecord as e:
    return bu.Skipped(e.reason, f"{where}: {e.detail}" if e.detail else where)
  heldout = set(bu.worker_state()["cfg"].get("heldout", ()))
  if heldout & {t.get("name") for t in tools}:
    return bu.Skipped("offers_heldout_function", where)
  return _too_long(_encode(messages, tools, f"tools/{source}"), where)


EVAL_SPLITS = {"heldout": "eval", "seen": "eval_seen", "generated": "eval_generated"}


def _eval_item(item):
  # "heldout": only held-out schemas; "seen": training schemas; "generated": functions
  # generated afresh (new names; their words are the generator's)
  which, index = item
  state = bu.worker_state()
  rng = bu.doc_rng(state["cfg"]["seed"], "tools", EVAL_SPLITS[which], index)
  if which == "generated":
    library = generated_library(rng, state["cfg"].get("max_offered", 4), state["heldout_words"],
                                state["name_words"],
                                state["cfg"].get("generated_apart_share", 0.0),
                                state["cfg"].get("generated_id_share", 1.0))
  else:
    library = state["heldout_library"] if which == "heldout" else state["train_library"]
  messages, tools, facts = synthesize(rng, library)
  first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
  return {"messages": messages[:first_user + 1], "tools": tools, **facts}


def real_items(source: str, path: str, split: str, val_fraction: float):
  """(source, where, record) of one split: val holds a fixed hash-chosen share of records."""
  for i, (where, record) in enumerate(bu.iter_records(path)):
    is_val = bu.stable_fraction("val", source, i) < val_fraction
    if is_val == (split == "val"):
      yield source, where, record


def strict_stream(results, strict: bool):
  for r in results:
    if strict and isinstance(r, bu.Skipped):
      raise ValueError(f"--strict: {r.where or 'a record'} was skipped ({r.reason})")
    yield r


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bu.add_common_args(p)
  p.add_argument("--glaive", action="append", default=[], help="glaive-function-calling-v2 JSON")
  p.add_argument("--hermes", action="append", default=[], help="hermes-function-calling-v1 JSON")
  p.add_argument("--synthetic_weight", type=float, default=1.0)
  p.add_argument("--glaive_weight", type=float, default=1.0)
  p.add_argument("--hermes_weight", type=float, default=1.0)
  p.add_argument("--val_fraction", type=float, default=0.01,
                 help="share of real records held out for val (hash of the record index)")
  p.add_argument("--seq_len", type=int, default=8192,
                 help="pack conversations into seq_len-token slots (0: no packing)")
  p.add_argument("--strict", action="store_true", help="fail on the first malformed record")
  p.add_argument("--eval_out", default=None, help="default OUT_DIR/eval.jsonl")
  p.add_argument("--eval_examples", type=int, default=500)
  p.add_argument("--rename_share", type=float, default=0.0,
                 help="share of synthetic train/val conversations whose functions and "
                      "parameters get generated names (teaches reading the offered schema)")
  p.add_argument("--generated_share", type=float, default=0.0,
                 help="share of synthetic train/val conversations whose offered functions are "
                      "generated afresh, name and request spelt from the same words")
  p.add_argument("--generated_apart_share", type=float, default=0.0,
                 help="share of the generated functions whose name is spelt from other words "
                      "than their request's (the name is then copied from the schema)")
  p.add_argument("--generated_id_share", type=float, default=1.0,
                 help="share of the generated functions that take an id of their noun (the "
                      "others take only values: numbers, choices, texts)")
  p.add_argument("--name_weight", type=int, default=1,
                 help="loss weight of the tokens that spell a call's function name")
  p.add_argument("--max_offered", type=int, default=4,
                 help="synthetic conversations offer 1 to this many functions")
  p.add_argument("--schema_detail", default="full", choices=SCHEMA_DETAILS,
                 help="synthetic schemas in full, or names and typed parameters only "
                      "(short schemas: the name a call copies is close by)")
  p.add_argument("--rename_words", default="fixed", choices=RENAME_WORDS,
                 help="the generated names' words (renamed and generated functions): fixed "
                      "lists, invented made-up words that can only be copied from the schema, "
                      "or pieces: one or two of the tokenizer's letter pieces joined")
  p.add_argument("--heldout_functions", default=",".join(HELDOUT_FUNCTIONS),
                 help="synthetic functions kept out of train/val and asked in eval.jsonl "
                      "('' = none: eval.jsonl then uses the training schemas)")
  return p.parse_args(argv)


def build(args) -> bu.Report:
  for path in args.glaive + args.hermes:
    if not os.path.exists(path):
      raise FileNotFoundError(f"input file {path} does not exist")
  tok = load_tokenizer(args.tokenizer)
  if not tok.has_chat_tokens:
    raise ValueError(f"tokenizer {args.tokenizer} lacks the chat/tool special tokens; train one "
                     f"with python -m data_pipeline.tokenizer")
  heldout = tuple(n.strip() for n in args.heldout_functions.split(",") if n.strip())
  split_library(heldout)  # bad names fail here, before any work
  for flag in ("rename_share", "generated_share", "generated_apart_share",
               "generated_id_share"):
    if not 0.0 <= getattr(args, flag) <= 1.0:
      raise ValueError(f"--{flag} {getattr(args, flag)} is not a share in [0, 1]")
  if not 1 <= args.name_weight <= 255:
    raise ValueError(f"--name_weight {args.name_weight}: a loss weight from 1 to 255")
  if args.max_offered < 1:
    raise ValueError(f"--max_offered {args.max_offered}: a conversation offers at least 1 "
                     "function")
  # The data options, one list for the workers' config and the shard's meta.
  options = {k: getattr(args, k) for k in (
      "rename_share", "rename_words", "generated_share", "generated_apart_share",
      "generated_id_share", "max_offered", "schema_detail", "name_weight")}
  cfg = {"seed": args.seed, "tokenizer": tok.path, "seq_len": args.seq_len, "heldout": heldout,
         **options}
  report = bu.Report("tool_synth")
  meta = {"name": "tool_synth", "seed": args.seed, "glaive": args.glaive, "hermes": args.hermes,
          "seq_len": args.seq_len, "heldout_functions": list(heldout), **options}
  targets = {"train": args.target_train_tokens, "val": args.target_val_tokens}
  tokens_per_source = {}
  with bu.OrderedPool(make_worker_state, cfg, args.num_workers) as pool, \
      shards.ShardDirWriter(args.out_dir, vocab_size=tok.vocab_size, tokenizer_path=tok.path,
                            bos_id=tok.bos_id, eos_id=tok.eos_id, overwrite=args.overwrite,
                            shard_tokens=args.shard_tokens, builder=meta) as writer:
    for split in ("train", "val"):
      streams = [("synthetic", pool.imap(_synthetic_item,
                                         ((split, i) for i in itertools.count())),
                  args.synthetic_weight)]
      for source, paths, weight in (("glaive", args.glaive, args.glaive_weight),
                                    ("hermes", args.hermes, args.hermes_weight)):
        if paths:
          items = itertools.chain.from_iterable(
              [real_items(source, p, split, args.val_fraction) for p in paths])
          streams.append((source, strict_stream(pool.imap(_real_item, items), args.strict),
                          weight))
      mix = bu.WeightedInterleave(streams)
      packer = bu.WindowPacker(args.seq_len, tok.eos_id)
      with bu.progress(targets[split], f"tools {split}", args.quiet) as bar:
        bu.write_documents(writer, split, (r for _, r in mix), report, bar, targets[split],
                           packer=packer)
      tokens_per_source[split] = writer.tokens_per_source(split)
      report.extra[f"{split}_pad_tokens"] = packer.pad_tokens
    eval_rows = pool.map(_eval_item, [("heldout", i) for i in range(args.eval_examples)])
    seen_rows = pool.map(_eval_item, [("seen", i) for i in range(args.eval_examples)])
    # Extras go into the staging dir: they are committed together with the shards.
    eval_out = args.eval_out or os.path.join(args.out_dir, "eval.jsonl")
    bu.write_jsonl(bu.staged_path(writer, eval_out), eval_rows)
    seen_out = os.path.join(os.path.dirname(eval_out), "eval_seen.jsonl")
    bu.write_jsonl(bu.staged_path(writer, seen_out), seen_rows)
    if args.generated_share > 0:
      generated_out = os.path.join(os.path.dirname(eval_out), "eval_generated.jsonl")
      bu.write_jsonl(bu.staged_path(writer, generated_out), pool.map(
          _eval_item, [("generated", i) for i in range(args.eval_examples)]))
    report.extra["heldout_functions"] = list(heldout)
    report.extra["rename"] = {"share": args.rename_share, "words": args.rename_words}
    report.extra["tokens_per_source"] = tokens_per_source
    report.extra["eval"] = f"{len(eval_rows)} prompts -> {eval_out}"
    bu.commit_report(report, writer)
  return report


def main(argv=None):
  args = parse_args(argv)
  bu.finish(build(args))


if __name__ == "__main__":
  bu.run_main(main)
