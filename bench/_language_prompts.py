"""Chinese, French, Spanish and German prompts for bench/bench_real_languages.py.

SmolLM2 answers in the prompt's language when asked in it, so its own answers to these
give real per-language distributions under one tokenizer. The same 40 everyday topics,
translated, with six instruction templates per language; no download. Held-out prompts
come from held-out *topics* (the last ``held`` of a seeded order), so no held-out
prompt shares its subject with a training prompt. English and Python prompts come from
bench/_learning_prompts.py.
"""

from __future__ import annotations

import random

TOPICS: dict[str, tuple[str, ...]] = {
    "zh": (
        "学习一门新语言", "存钱", "种西红柿", "公开演讲", "时间管理", "写求职信", "煮米饭",
        "跑步训练", "水循环", "光合作用", "黑洞", "火山", "印刷术", "电动汽车", "太阳能电池板",
        "回收塑料", "睡个好觉", "多喝水", "写日记", "团队合作", "远程工作", "求职面试",
        "在新城市交朋友", "多读书", "学弹吉他", "观鸟", "照顾猫", "训练狗", "策划生日聚会",
        "省钱旅行", "烤面包", "泡茶", "冥想", "气候变化", "人的心脏", "古代埃及", "下象棋",
        "学数学", "准备考试", "写诗",
    ),
    "fr": (
        "apprendre une nouvelle langue", "économiser de l'argent", "cultiver des tomates",
        "parler en public", "la gestion du temps", "écrire une lettre de motivation",
        "cuire du riz", "s'entraîner à la course", "le cycle de l'eau", "la photosynthèse",
        "les trous noirs", "les volcans", "l'imprimerie", "les voitures électriques",
        "les panneaux solaires", "le recyclage du plastique", "bien dormir", "boire assez d'eau",
        "tenir un journal", "le travail d'équipe", "le télétravail", "les entretiens d'embauche",
        "se faire des amis dans une nouvelle ville", "lire plus de livres",
        "apprendre la guitare", "observer les oiseaux", "s'occuper d'un chat", "dresser un chien",
        "organiser un anniversaire", "voyager avec un petit budget", "faire du pain",
        "préparer le café", "la méditation", "le changement climatique", "le cœur humain",
        "l'Égypte ancienne", "les échecs", "apprendre les mathématiques",
        "réviser pour un examen", "écrire un poème",
    ),
    "es": (
        "aprender un idioma nuevo", "ahorrar dinero", "cultivar tomates", "hablar en público",
        "la gestión del tiempo", "escribir una carta de presentación", "cocinar arroz",
        "entrenar para correr", "el ciclo del agua", "la fotosíntesis", "los agujeros negros",
        "los volcanes", "la imprenta", "los coches eléctricos", "los paneles solares",
        "reciclar plástico", "dormir bien", "beber suficiente agua", "escribir un diario",
        "el trabajo en equipo", "el teletrabajo", "las entrevistas de trabajo",
        "hacer amigos en una ciudad nueva", "leer más libros", "aprender a tocar la guitarra",
        "observar aves", "cuidar un gato", "entrenar a un perro",
        "organizar una fiesta de cumpleaños",
        "viajar con poco dinero", "hacer pan", "preparar café", "la meditación",
        "el cambio climático", "el corazón humano", "el antiguo Egipto", "el ajedrez",
        "aprender matemáticas", "estudiar para un examen", "escribir un poema",
    ),
    "de": (
        "eine neue Sprache lernen", "Geld sparen", "Tomaten anbauen", "öffentlich sprechen",
        "Zeitmanagement", "ein Bewerbungsschreiben schreiben", "Reis kochen", "Lauftraining",
        "der Wasserkreislauf", "die Photosynthese", "schwarze Löcher", "Vulkane",
        "der Buchdruck", "Elektroautos", "Solarzellen", "Plastik recyceln", "gut schlafen",
        "genug Wasser trinken", "ein Tagebuch führen", "Teamarbeit", "Homeoffice",
        "Vorstellungsgespräche", "Freunde in einer neuen Stadt finden", "mehr Bücher lesen",
        "Gitarre spielen lernen", "Vögel beobachten", "eine Katze pflegen", "einen Hund erziehen",
        "eine Geburtstagsfeier planen", "günstig reisen", "Brot backen", "Kaffee kochen",
        "Meditation", "der Klimawandel", "das menschliche Herz", "das alte Ägypten", "Schach",
        "Mathematik lernen", "für eine Prüfung lernen", "ein Gedicht schreiben",
    ),
}  # fmt: skip

TEMPLATES: dict[str, tuple[str, ...]] = {
    "zh": (
        "请用简单的话向十岁的孩子解释{t}。", "请给出关于{t}的三个实用建议。",
        "写一段关于{t}的短文。",
        "人们在{t}方面最常犯的错误是什么？", "列出{t}的优点和缺点。", "写一个与{t}有关的小故事。",
    ),
    "fr": (
        "Explique {t} à un enfant de dix ans.", "Donne trois conseils pratiques sur {t}.",
        "Écris un court paragraphe sur {t}.",
        "Quelles sont les erreurs les plus courantes à propos de {t} ?",
        "Liste les avantages et les inconvénients de {t}.",
        "Écris une courte histoire qui parle de {t}.",
    ),
    "es": (
        "Explica {t} a un niño de diez años.", "Da tres consejos prácticos sobre {t}.",
        "Escribe un párrafo corto sobre {t}.",
        "¿Cuáles son los errores más comunes sobre {t}?",
        "Enumera las ventajas y desventajas de {t}.",
        "Escribe una historia corta sobre {t}.",
    ),
    "de": (
        "Erkläre einem zehnjährigen Kind: {t}.", "Gib drei praktische Tipps zum Thema {t}.",
        "Schreibe einen kurzen Absatz über das Thema {t}.",
        "Was sind die häufigsten Fehler beim Thema {t}?",
        "Nenne die Vor- und Nachteile beim Thema {t}.",
        "Schreibe eine kurze Geschichte zum Thema {t}.",
    ),
}  # fmt: skip

LANGS = tuple(TOPICS)


def build(lang: str, held: int = 8, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts) in ``lang`` as distill records (``id``, ``lang``,
    ``text``): every template over the training topics; three templates per held-out topic."""
    rng = random.Random(f"{seed}-{lang}")
    topics = list(TOPICS[lang])
    rng.shuffle(topics)
    train_topics, held_topics = topics[:-held], topics[-held:]
    train = [{"text": tpl.format(t=t)} for t in train_topics for tpl in TEMPLATES[lang]]
    rng.shuffle(train)
    held_out = [
        {"text": tpl.format(t=t)} for t in held_topics for tpl in rng.sample(TEMPLATES[lang], 3)
    ]
    for prefix, recs in (("t", train), ("h", held_out)):
        for i, rec in enumerate(recs):
            rec["id"], rec["lang"] = f"{lang}-{prefix}{i}", lang
    return train, held_out
